"""The reliability suite of issue 7: bad input through every command, unwritable or full disks, and real kills.

test_data.py runs the bad-input corpus through ``load_samples`` and ``iterit inspect``; here it goes through every
command that reads data, in-process through ``iterit.cli.main``. test_scoring.py and test_training.py kill one
run at a fixed point; here ``score`` and ``train`` are killed at seeded random points, every file left behind is
parsed, and the resumed output is compared with an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from iterit.cli import main
from iterit.data import load_samples

BAD = Path(__file__).parent / "data" / "bad"
REPO = Path(__file__).resolve().parents[1]
MISSING_MODEL = "/nonexistent/iterit-reliability-model"  # loading it would fail with a message naming it

# file -> (where the message must point: "file:line", or the file where the case has no line;
#          samples kept with --skip-invalid, None where nothing in the file can be read)
CORPUS: dict[str, tuple[str, int | None]] = {
    "truncated.json": ("truncated.json:2", 1),
    "truncated.jsonl": ("truncated.jsonl:3", 2),
    "wrong_type.jsonl": ("wrong_type.jsonl:2", 1),
    "binary_junk.jsonl": ("binary_junk.jsonl", None),
    "mixed_formats.jsonl": ("mixed_formats.jsonl:2", 2),
    "empty.jsonl": ("empty.jsonl", None),
    "unknown_fields.jsonl": ("unknown_fields.jsonl:2", 1),
    "null_response.jsonl": ("null_response.jsonl:2", 1),
    "invalid_utf8.jsonl": ("invalid_utf8.jsonl:2", 1),
    "no_final_assistant.jsonl": ("no_final_assistant.jsonl:1", 0),
    "empty_response.jsonl": ("empty_response.jsonl:2", 1),
    "deep_nesting.json": ("deep_nesting.json", None),  # 100,000 '[': Python's parser recurses
}
CLEAN = ("bom.jsonl", "crlf.jsonl")  # odd encodings of valid files: they load (test_data.py checks the rows)
DATA_COMMANDS = ("inspect", "score", "select", "train", "eval")
FAST = ["--max-length", "64"]
TRAIN_FAST = [*FAST, "--use-cpu", "--report-to", "none", "--save-strategy", "no", "--quiet", "--num_train_epochs", "1",
              "--per_device_train_batch_size", "1", "--threshold", "10", "--update_ratio", "1"]


def command_args(command: str, data: Path | str, tmp: Path, model: str = MISSING_MODEL) -> list[str]:
    """A command line for ``command`` reading ``data``, writing under ``tmp``, with fast settings."""
    data = str(data)
    return {
        "inspect": ["inspect", "--data", data],
        "score": ["score", "--model", model, "--data", data, "--out", str(tmp / "scores.parquet"), "--quiet", *FAST],
        "select": ["select", "--data", data, "--scores", str(tmp / "scores.parquet"), "--budget", "1",
                   "--out", str(tmp / "subset.jsonl")],
        "train": ["train", "--model", model, "--data", data, "--out", str(tmp / "run"), "--ratio", "1", *TRAIN_FAST],
        "eval": ["eval", "--model", model, "--data", data, "--out", str(tmp / "eval.json"), "--metrics", "loss",
                 "--quiet", *FAST],
    }[command]


def one_error_line(capsys: pytest.CaptureFixture) -> str:
    """The command's stderr, checked to be a single line without a traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_corpus_table_names_every_file_in_the_folder() -> None:
    assert sorted(p.name for p in BAD.iterdir()) == sorted([*CORPUS, *CLEAN])


# ---------------------------------------------------------------- bad input through every command


@pytest.mark.parametrize("name", sorted(CORPUS))
@pytest.mark.parametrize("command", DATA_COMMANDS)
def test_bad_file_stops_every_command_with_one_line_before_the_model_loads(
    command: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # The model (and, for select, the scores file) does not exist: a message about the data proves the data is
    # read first, which is the cheap check (a real model takes minutes to load).
    assert main(command_args(command, BAD / name, tmp_path)) == 2
    err = one_error_line(capsys)
    assert CORPUS[name][0] in err
    assert "iterit-reliability-model" not in err and "scores.parquet" not in err


@pytest.mark.parametrize("name", [n for n, (_, kept) in CORPUS.items() if not kept])
@pytest.mark.parametrize("command", ["select", "train", "eval"])
def test_skip_invalid_with_nothing_valid_left_is_one_clear_error(
    command: str, name: str, tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    args = command_args(command, BAD / name, tmp_path, model=str(tiny_model_dir))
    assert main([*args, "--skip-invalid"]) == 2
    one_error_line(capsys)


def test_score_with_nothing_valid_left_is_one_clear_error(tmp_path: Path, tiny_model_dir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    args = command_args("score", BAD / "no_final_assistant.jsonl", tmp_path, model=str(tiny_model_dir))
    assert main([*args, "--skip-invalid"]) == 2
    one_error_line(capsys)


def valid_ids(name: str) -> list[str]:
    return [s.id for s in load_samples([BAD / name], skip_invalid=True).samples]


REPRESENTATIVE = ["truncated.json", "mixed_formats.jsonl", "null_response.jsonl"]


@pytest.mark.parametrize("name", REPRESENTATIVE)
def test_score_select_and_eval_skip_invalid_keep_the_valid_rows(name: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    from iterit.storage import read_table

    model = str(tiny_model_dir)
    assert main([*command_args("score", BAD / name, tmp_path, model=model), "--skip-invalid"]) == 0
    assert [row["id"] for row in read_table(tmp_path / "scores.parquet")[0]] == valid_ids(name)
    # Selection reads the same data with the same options; the scores line up with the valid rows.
    assert main([*command_args("select", BAD / name, tmp_path), "--skip-invalid"]) == 0
    manifest = read_table(tmp_path / "subset.manifest.jsonl")[0]
    assert len(manifest) == 1 and manifest[0]["id"] in valid_ids(name)
    assert main([*command_args("eval", BAD / name, tmp_path, model=model), "--skip-invalid"]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["overall"]["n"] == CORPUS[name][1]


@pytest.mark.parametrize("name", REPRESENTATIVE[:2])
def test_train_skip_invalid_trains_on_the_valid_rows(name: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    from iterit.storage import read_table

    assert main([*command_args("train", BAD / name, tmp_path, model=str(tiny_model_dir)), "--skip-invalid"]) == 0
    run = tmp_path / "run"
    assert [row["id"] for row in read_table(run / "epochs" / "0" / "scores.parquet")[0]] == valid_ids(name)
    assert {row["id"] for row in read_table(run / "epochs" / "0" / "selection.parquet")[0]} <= set(valid_ids(name))
    assert (run / "model" / "model.safetensors").exists() and (run / "summary.json").exists()


# ---------------------------------------------------------------- unwritable output, full disk

VALID_ROWS = [{"instruction": "Say hi.", "output": "Hi!"}, {"instruction": "Say bye.", "output": "Bye!"}]


@pytest.fixture()
def good_data(tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in VALID_ROWS), encoding="utf-8")
    return path


def output_args(command: str, data: Path, out: Path) -> list[str]:
    """``command`` with a valid data file, a model that does not exist, and its output at ``out``."""
    return {
        "score": ["score", "--model", MISSING_MODEL, "--data", str(data), "--out", str(out / "scores.parquet")],
        "select": ["select", "--data", str(data), "--strategy", "random", "--budget", "1",
                   "--out", str(out / "subset.jsonl")],
        "train": ["train", "--model", MISSING_MODEL, "--data", str(data), "--out", str(out / "run")],
        "eval": ["eval", "--model", MISSING_MODEL, "--data", str(data), "--out", str(out / "eval.json")],
        "demo": ["demo", "--quick", "--out", str(out / "demo"), "--cache", str(out / "cache")],
    }[command]


# Tests run as root, where a read-only folder is still writable; a path below a regular file can never be created.
@pytest.mark.parametrize("command", list(("score", "select", "train", "eval", "demo")))
def test_output_below_a_regular_file_is_one_line_before_any_work(
    command: str, tmp_path: Path, good_data: Path, capsys: pytest.CaptureFixture
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(output_args(command, good_data, blocker)) == 2
    err = one_error_line(capsys)
    assert "a-file" in err and "iterit-reliability-model" not in err


def test_check_writable_accepts_a_folder_it_can_create_and_creates_nothing(tmp_path: Path) -> None:
    from iterit.storage import check_writable

    check_writable(tmp_path / "new" / "deeper" / "out.parquet")  # folders that can be made are fine
    assert not (tmp_path / "new").exists()  # and the check itself creates nothing


@pytest.mark.parametrize("command", ["score", "select", "train", "eval", "demo"])
def test_full_disk_is_one_line_before_any_work(
    command: str, tmp_path: Path, good_data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iterit.storage

    monkeypatch.setattr(iterit.storage, "_free_bytes", lambda folder: 1024 * 1024)
    assert main(output_args(command, good_data, tmp_path / "out")) == 2
    err = one_error_line(capsys)
    assert "free" in err and "iterit-reliability-model" not in err
    assert not (tmp_path / "out" / "demo" / "data").exists()  # the demo generated nothing


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """A real one-epoch train run folder, for the report's checks."""
    tmp = tmp_path_factory.mktemp("report-run")
    data = tmp / "good.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in VALID_ROWS * 3), encoding="utf-8")
    assert main(command_args("train", data, tmp, model=str(tiny_model_dir))) == 0
    return tmp / "run"


def test_report_on_a_full_disk_is_one_line(finished_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import iterit.storage

    run = shutil.copytree(finished_run, tmp_path / "run")
    monkeypatch.setattr(iterit.storage, "_free_bytes", lambda folder: 1024 * 1024)
    assert main(["report", str(run)]) == 2
    assert "free" in one_error_line(capsys)


def test_report_with_its_plots_folder_blocked_is_one_line(finished_run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    run = shutil.copytree(finished_run, tmp_path / "run")
    shutil.rmtree(run / "plots", ignore_errors=True)
    (run / "plots").write_text("a file where the plots folder goes")
    assert main(["report", str(run)]) == 2
    assert "plots" in one_error_line(capsys)


# ---------------------------------------------------------------- a failed start, and the console (issue 19)


def test_a_failed_score_start_does_not_block_the_corrected_rerun(tmp_path: Path, good_data: Path,
                                                                 tiny_model_dir: Path) -> None:
    out = tmp_path / "x.jsonl"
    assert main(["score", "--model", MISSING_MODEL, "--data", str(good_data), "--out", str(out), *FAST]) == 2
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(good_data), "--out", str(out), *FAST]) == 0
    assert out.exists() and not Path(f"{out}.shards").exists()


def test_a_budget_above_the_candidates_is_a_warning_naming_both(tmp_path: Path, good_data: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    import logging

    with caplog.at_level(logging.WARNING):
        assert main(["select", "--data", str(good_data), "--strategy", "random", "--budget", "99999",
                     "--out", str(tmp_path / "subset.jsonl")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("99999" in w and " 2 " in w for w in warnings), warnings


def test_missing_scores_are_grouped_by_kind_with_examples(tmp_path: Path, tiny_model_dir: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "varied.jsonl"
    rows = [{"instruction": "word " * (i + 1), "output": "ok"} for i in range(8)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    assert main(["score", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tmp_path / "s.jsonl"),
                 "--max-length", "3", "--quiet"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "no score for" in line]
    assert len(lines) == 1, lines
    assert "no score for 8:" in lines[0] and "e.g." in lines[0]


# ---------------------------------------------------------------- fault injection: SIGKILL at random points

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO / "src")}
# Small shards (the CLI's --shard-size, 1000 by default) give many kill points.
SCORE_SCRIPT = ("import sys; from iterit.config import ScoreConfig; from iterit.recipes.score import run; "
                "run(ScoreConfig(model=sys.argv[1], data=[sys.argv[2]], out=sys.argv[3], shard_size=8, max_length=64, "
                "quiet=True))")
PARTIAL_FOLDER = re.compile(r"\.(model|adapter)\.partial")  # training's save-then-rename folders
TEMP_FILE = re.compile(r"\.(?P<target>.+)\.[A-Za-z0-9_]{8}\.tmp")  # storage.atomic_path's mkstemp names
KILLS_PER_COMMAND = 2


@contextmanager
def launched(command: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """Start ``command`` in its own process group; on leaving, kill what is still running and reap it."""
    with open(log, "w") as sink:
        process = subprocess.Popen(command, env=ENV, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


def wait_until(ready: Callable[[], bool], process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"exited ({process.returncode}) before the kill point:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "timed out waiting for the kill point"
        time.sleep(0.01)


def run_to_end(command: list[str], log: Path, start: Callable[[], bool], end: Callable[[], bool]) -> float:
    """Run ``command`` uninterrupted; the seconds from ``start`` first holding to ``end`` (the window for kills)."""
    with launched(command, log) as process:
        wait_until(start, process, log)
        seen = time.monotonic()
        while not end() and process.poll() is None:
            time.sleep(0.01)
        window = time.monotonic() - seen
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
        return window


def kill_at_random_point(command: list[str], log: Path, marker: Callable[[], bool], window_s: float,
                         rng: random.Random) -> int:
    """Start ``command``, wait for ``marker``, SIGKILL it a seeded random time later; its exit status."""
    with launched(command, log) as process:
        wait_until(marker, process, log)
        time.sleep(rng.uniform(0.0, window_s))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=60)


def parse_file(path: Path) -> None:
    """Fully read ``path`` by its format; a half-written file raises."""
    suffix = path.suffix
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)
    elif suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))
    elif suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            json.loads(line)
    elif suffix == ".safetensors":
        from safetensors.torch import load_file

        load_file(path)
    elif suffix in (".yaml", ".yml"):
        import yaml

        yaml.safe_load(path.read_text(encoding="utf-8"))
    elif suffix in (".pt", ".pth", ".bin"):
        import torch

        torch.load(path, map_location="cpu", weights_only=False)


def assert_nothing_half_written(root: Path) -> None:
    """Every file under a final name parses; temp files are atomic-write temps beside their target.

    Files inside ``.model.partial`` / ``.adapter.partial`` are not under a final name: the folder is renamed to
    ``model`` / ``adapter`` once the save is complete, and a kill mid-save leaves it for the resumed run to redo.

    An HF checkpoint folder counts only once iterit's state file, written last by ``on_save``, is in it:
    ``--resume`` ignores the others, so a checkpoint the kill cut short is never read.
    """
    from iterit.reselection import STATE_FILE

    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.name.endswith(".tmp"):
            assert TEMP_FILE.fullmatch(path.name), f"a temp file that no atomic write made: {path}"
            continue
        if any(PARTIAL_FOLDER.fullmatch(p.name) for p in path.parents):
            continue  # a model folder being saved: renamed into place only once complete (training._save_whole)
        checkpoint = next((p for p in path.parents if p.name.startswith("checkpoint-")), None)
        if checkpoint is not None and not (checkpoint / STATE_FILE).exists():
            continue
        try:
            parse_file(path)
        except Exception as err:  # any parse failure is the finding; name the file
            raise AssertionError(f"half-written file under its final name: {path} ({err})") from err


def write_facts(path: Path, n: int) -> Path:
    rows = [{"instruction": f"What is {i} plus {i % 7}?", "input": "", "output": f"{i} plus {i % 7} is {i + i % 7}."}
            for i in range(n)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_score_killed_at_random_points_resumes_to_the_uninterrupted_output(tmp_path: Path, tiny_model_dir: Path) -> None:
    from iterit.storage import read_table

    data = write_facts(tmp_path / "facts.jsonl", 320)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-c", SCORE_SCRIPT, str(tiny_model_dir), str(data), str(out)]

    def first_shard(out: Path) -> Callable[[], bool]:
        return lambda: any(Path(f"{out}.shards").glob("shard-*.json"))

    straight = tmp_path / "straight" / "scores.parquet"
    window = run_to_end(command(straight), tmp_path / "straight.log", first_shard(straight), straight.exists)
    expected = read_table(straight)[0]
    assert len(expected) == 320
    for kill in range(KILLS_PER_COMMAND):
        out = tmp_path / f"killed{kill}" / "scores.parquet"
        status = kill_at_random_point(command(out), tmp_path / f"killed{kill}.log", first_shard(out), window,
                                      random.Random(f"score-{kill}"))
        assert_nothing_half_written(out.parent)
        assert status in (-signal.SIGKILL, 0)
        run_to_end(command(out), tmp_path / f"resumed{kill}.log", lambda: True, lambda: False)
        assert read_table(out)[0] == expected
        assert not Path(f"{out}.shards").exists()
        assert_nothing_half_written(out.parent)


TRAIN_SETTINGS = ["--ratio", "16", "--update_ratio", "2", "--num_train_epochs", "4", "--per_device_train_batch_size", "4",
                  "--learning_rate", "1e-2", "--max-length", "64", "--use-cpu", "--report-to", "none", "--quiet",
                  "--seed", "0", "--threshold", "10", "--strategy", "iterit"]


@pytest.mark.slow
def test_train_killed_at_random_points_resumes_to_the_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from iterit.reselection import STATE_FILE
    from iterit.storage import read_table

    data = write_facts(tmp_path / "facts.jsonl", 64)
    iterit = str(Path(sys.executable).with_name("iterit"))

    def command(run: Path, *extra: str) -> list[str]:
        return [iterit, "train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(run),
                *TRAIN_SETTINGS, *extra]

    def first_checkpoint(run: Path) -> Callable[[], bool]:
        return lambda: any((run / "checkpoints").glob(f"checkpoint-*/{STATE_FILE}"))

    def selections(run: Path) -> list[list[str]]:
        epochs = sorted((run / "epochs").iterdir(), key=lambda p: int(p.name))
        return [[row["id"] for row in read_table(e / "selection.parquet")[0]] for e in epochs]

    whole = tmp_path / "whole"
    window = run_to_end(command(whole), tmp_path / "whole.log", first_checkpoint(whole),
                        (whole / "summary.json").exists)
    expected_weights = load_file(whole / "model" / "model.safetensors")
    assert len(selections(whole)) == 4
    for kill in range(KILLS_PER_COMMAND):
        run = tmp_path / f"killed{kill}"
        kill_at_random_point(command(run), tmp_path / f"killed{kill}.log", first_checkpoint(run), window,
                             random.Random(f"train-{kill}"))
        assert_nothing_half_written(run)
        run_to_end(command(run, "--resume"), tmp_path / f"resumed{kill}.log", lambda: True, lambda: False)
        assert_nothing_half_written(run)
        assert selections(run) == selections(whole)
        weights = load_file(run / "model" / "model.safetensors")
        assert weights.keys() == expected_weights.keys()
        for name, tensor in expected_weights.items():
            assert torch.equal(weights[name], tensor), name
