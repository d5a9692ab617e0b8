"""The console (issue 18): one bar per training epoch on a terminal, no library bars, each warning once."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from iterit.cli import main, warnings_once_per_run
from iterit.progress import OncePerRun

ROWS = [{"instruction": f"Say word number {i}.", "output": f"Word {i} is here."} for i in range(8)]
TRAIN = ["--max-length", "64", "--use-cpu", "--report-to", "none", "--save-strategy", "no",
         "--num_train_epochs", "2", "--per_device_train_batch_size", "2", "--ratio", "0.5", "--strategy", "random"]
LIBRARY_BARS = ("Loading weights", "Writing model shards", "Map:", "it/s]")


class Terminal(io.StringIO):
    """stderr as a terminal: tqdm draws its bars only where ``isatty()`` is true."""

    def isatty(self) -> bool:
        return True


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def train_on_a_terminal(monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path, data: Path, out: Path,
                        *extra: str) -> tuple[str, str]:
    terminal = Terminal()
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(sys, "stdout", stdout)
    handler = logging.StreamHandler(terminal)  # where the CLI's log lines go, as basicConfig would send them
    logging.getLogger().addHandler(handler)
    try:
        status = main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), *TRAIN,
                       *extra])
    finally:
        logging.getLogger().removeHandler(handler)
    assert status == 0
    return stdout.getvalue(), terminal.getvalue()


def test_train_on_a_terminal_draws_one_bar_per_epoch_and_no_library_bars(monkeypatch, tiny_model_dir, data,
                                                                          tmp_path):
    printed, console = train_on_a_terminal(monkeypatch, tiny_model_dir, data, tmp_path / "run")
    assert "epoch 1/2" in console and "epoch 2/2" in console
    assert not any(bar in console for bar in LIBRARY_BARS), console
    assert "{'loss'" not in printed + console  # the Trainer's log dicts are not printed
    assert printed.rstrip().splitlines()[-1].startswith("report: ")


def test_quiet_draws_no_bar_at_all(monkeypatch, tiny_model_dir, data, tmp_path):
    printed, console = train_on_a_terminal(monkeypatch, tiny_model_dir, data, tmp_path / "run", "--quiet")
    assert "epoch 1/2" not in console and "\r" not in console
    assert "epoch 1: train loss" in printed  # the log-friendly lines stay


def test_verbose_shows_the_library_bars_again(monkeypatch, tiny_model_dir, data, tmp_path):
    _, console = train_on_a_terminal(monkeypatch, tiny_model_dir, data, tmp_path / "run", "--verbose")
    assert "Loading weights" in console
    train_on_a_terminal(monkeypatch, tiny_model_dir, data, tmp_path / "again")  # and hides them after


def test_a_repeated_warning_reaches_the_console_once():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    log = logging.getLogger("iterit.test_progress")
    log.setLevel(logging.INFO)
    try:
        with warnings_once_per_run():
            for _ in range(3):
                log.warning("84%% of samples have IFD >= %d", 1)
            log.warning("another warning")
            log.info("info lines repeat")
            log.info("info lines repeat")
        log.warning("another warning")  # a new run says it again
    finally:
        logging.getLogger().removeHandler(handler)
        log.setLevel(logging.NOTSET)
    assert stream.getvalue().splitlines() == ["84% of samples have IFD >= 1", "another warning",
                                              "info lines repeat", "info lines repeat", "another warning"]


def test_once_per_run_keeps_info_records():
    once = OncePerRun()
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "same", None, None)
    assert once.filter(record) and once.filter(record)
    warning = logging.LogRecord("x", logging.WARNING, __file__, 1, "same", None, None)
    assert once.filter(warning) and not once.filter(warning)
