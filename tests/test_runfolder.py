"""A run folder is iterit's own or empty (issue 19): the marker file, resume, refusal and ``--overwrite``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from iterit.cli import main
from iterit.errors import IterITError
from iterit.runfolder import MARKER, check_run_folder, claim_run_folder

ROWS = [{"instruction": f"Say word number {i}.", "output": f"Word {i}."} for i in range(6)]
TRAIN = ["--max-length", "64", "--use-cpu", "--report-to", "none", "--save-strategy", "no", "--quiet",
         "--num_train_epochs", "1", "--per_device_train_batch_size", "2", "--threshold", "10", "--update_ratio", "1",
         "--ratio", "2"]
WRITES = ("config.yaml", "model", "epochs")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


@pytest.fixture()
def userdir(tmp_path: Path) -> Path:
    """A folder of the user's own, with a ``model/`` subfolder holding their file."""
    folder = tmp_path / "userdir"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "notes.txt").write_text("my own notes")
    (folder / "keep.txt").write_text("keep me")
    return folder


# ---------------------------------------------------------------- the functions


def test_a_missing_or_empty_folder_is_free(tmp_path: Path) -> None:
    check_run_folder(tmp_path / "new", {"a": 1}, writes=WRITES)
    (tmp_path / "empty").mkdir()
    check_run_folder(tmp_path / "empty", {"a": 1}, writes=WRITES)


def test_a_foreign_folder_is_refused_naming_what_it_holds(userdir: Path) -> None:
    with pytest.raises(IterITError, match=r"not an iterit run folder.*keep\.txt.*--overwrite"):
        check_run_folder(userdir, {"a": 1}, writes=WRITES)


def test_the_same_settings_resume_and_other_settings_are_named(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_run_folder(run, {"lr": 1, "seed": 0}, writes=WRITES)
    (run / "epochs").mkdir()  # finished work
    check_run_folder(run, {"lr": 1, "seed": 0}, writes=WRITES)
    with pytest.raises(IterITError, match=r"differs in: lr, seed"):
        check_run_folder(run, {"lr": 2, "seed": 1}, writes=WRITES)
    check_run_folder(run, {"lr": 2, "seed": 1}, writes=WRITES, overwrite=True)


def test_a_claimed_folder_with_nothing_finished_is_free(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_run_folder(run, {"lr": 1}, writes=WRITES)
    check_run_folder(run, {"lr": 2}, writes=WRITES)  # a failed start blocks nothing


def test_overwrite_replaces_only_what_iterit_writes_and_says_so(userdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    check_run_folder(userdir, {"a": 1}, writes=WRITES, overwrite=True)
    with caplog.at_level(logging.WARNING):
        claim_run_folder(userdir, {"a": 1}, writes=WRITES, overwrite=True)
    assert not (userdir / "model").exists() and (userdir / "keep.txt").read_text() == "keep me"
    assert "model" in caplog.text and "replac" in caplog.text
    assert json.loads((userdir / MARKER).read_text())["settings"] == {"a": 1}


# ---------------------------------------------------------------- train through the CLI (the table)


def test_train_into_a_foreign_folder_is_refused(userdir: Path, data: Path, tiny_model_dir: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(userdir), *TRAIN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (userdir / "model" / "notes.txt").read_text() == "my own notes"
    assert sorted(p.name for p in userdir.iterdir()) == ["keep.txt", "model"]


@pytest.mark.slow
def test_train_runs_resume_refuse_other_settings_and_overwrite(tmp_path: Path, userdir: Path, data: Path,
                                                               tiny_model_dir: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    base = ["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(run), *TRAIN]
    assert main(base) == 0
    assert (run / MARKER).exists()
    assert main(base) == 0  # the same settings: allowed, as before
    capsys.readouterr()
    assert main([*base, "--learning-rate", "1e-3"]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert main(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(userdir), *TRAIN,
                 "--overwrite"]) == 0
    assert (userdir / "keep.txt").read_text() == "keep me"
    assert not (userdir / "model" / "notes.txt").exists() and (userdir / "model" / "config.json").exists()


# ---------------------------------------------------------------- the layout


def test_run_folder_names_every_entry_once_and_writes_atomically(tmp_path):
    from iterit.runfolder import RUN_ENTRIES, RunFolder
    from iterit.storage import read_table

    folder = RunFolder(tmp_path / "run")
    assert folder.config.name == "config.yaml" and folder.summary.name == "summary.json"
    for path in (folder.config, folder.summary, folder.epochs, folder.model, folder.adapter):
        assert path.parent == folder.root and path.name in RUN_ENTRIES
    assert not folder.is_train_run() and folder.epoch_folders() == []
    folder.write_epoch_table(1, "selection", ".jsonl", [{"id": "a"}], metadata={"epoch": 1})
    folder.write_epoch_json(0, "dynamics.json", {"epoch": 0})
    folder.write_summary({"budget": 1})
    assert folder.epoch_table(1, "selection", ".jsonl") == tmp_path / "run" / "epochs" / "1" / "selection.jsonl"
    assert read_table(folder.epoch_table(1, "selection", ".jsonl"))[0] == [{"id": "a"}]
    assert [p.name for p in folder.epoch_folders()] == ["0", "1"] and folder.is_train_run()
    assert not list(folder.root.rglob("*.tmp"))
