"""Outputs that would overwrite an input are refused (issue 19): the one guard, and every command that writes.

Each case of the issue's table runs through ``iterit.cli.main`` with a real tiny model where the command needs
one, and checks that the input survives byte for byte and the refusal is one line with exit status 2.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from iterit.cli import main
from iterit.errors import IterITError
from iterit.outputs import check_output

ROWS = [{"instruction": f"Say word number {i}.", "output": f"Word {i}."} for i in range(6)]
FAST = ["--max-length", "64", "--quiet"]


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


def refused(argv: list[str], capsys: pytest.CaptureFixture, *protected: Path) -> str:
    """Run ``argv``, check it exits 2 with one line and that every ``protected`` file kept its bytes."""
    before = {path: path.read_bytes() for path in protected}
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert {path: path.read_bytes() for path in protected} == before
    return err


# ---------------------------------------------------------------- the guard alone


def test_the_same_file_by_another_name_is_refused(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "link.jsonl").symlink_to(data)
    os.link(data, tmp_path / "hard.jsonl")
    for out in ("in.jsonl", "./in.jsonl", "sub/../in.jsonl", "link.jsonl", "hard.jsonl", str(data)):
        with pytest.raises(IterITError, match=r"--out .*--data"):
            check_output(out, {"--data": ["in.jsonl"]})


def test_an_output_inside_an_input_folder_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    with pytest.raises(IterITError, match="inside --model"):
        check_output(model / "scores.parquet", {"--model": str(model)})


def test_an_output_folder_holding_an_input_is_refused_where_it_writes(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    with pytest.raises(IterITError, match="--model"):
        check_output(run, {"--model": str(run / "model")}, writes=("model", "config.yaml"))
    check_output(run, {"--data": str(run / "mine.jsonl")}, writes=("model", "config.yaml"))  # not written over


def test_distinct_files_and_missing_inputs_pass(tmp_path: Path, data: Path) -> None:
    check_output(tmp_path / "out.jsonl", {"--data": [str(data)], "--scores": None, "--model": "org/hub-name"})


def test_in_memory_inputs_are_no_files_to_protect(tmp_path: Path, data: Path) -> None:
    import datasets

    dataset = datasets.Dataset.from_list(ROWS)
    check_output(tmp_path / "out.jsonl", {"--data": [dataset, str(data)]})
    with pytest.raises(IterITError, match="same file"):
        check_output(data, {"--data": [dataset, str(data)]})


# ---------------------------------------------------------------- the table, through the CLI


def test_select_out_onto_its_data_is_refused(data: Path, capsys: pytest.CaptureFixture) -> None:
    err = refused(["select", "--data", str(data), "--strategy", "random", "--budget", "2", "--out", str(data)],
                  capsys, data)
    assert "in.jsonl" in err and "--data" in err


def test_select_manifest_onto_its_data_is_refused(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    manifest_named = tmp_path / "sub.manifest.jsonl"
    manifest_named.write_bytes(data.read_bytes())
    err = refused(["select", "--data", str(manifest_named), "--strategy", "random", "--budget", "2",
                   "--out", str(tmp_path / "sub.jsonl")], capsys, manifest_named)
    assert "manifest" in err


def test_select_out_onto_its_scores_is_refused(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    scores = tmp_path / "s.jsonl"
    scores.write_text('{"id": "0", "ifd": 0.5}\n')
    refused(["select", "--data", str(data), "--scores", str(scores), "--budget", "2", "--out", str(scores)],
            capsys, data, scores)


def test_select_out_onto_a_symlinked_data_file_is_refused(tmp_path: Path, data: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    link = tmp_path / "link.jsonl"
    link.symlink_to(data)
    refused(["select", "--data", str(link), "--strategy", "random", "--budget", "2", "--out", str(data)],
            capsys, data)


def test_score_out_onto_its_data_is_refused(data: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(data.parent)
    refused(["score", "--model", str(tiny_model_dir), "--data", "in.jsonl", "--out", "./in.jsonl", *FAST],
            capsys, data)
    assert not Path("in.jsonl.shards").exists()


def test_score_out_inside_the_model_folder_is_refused(data: Path, tiny_model_dir: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    before = sorted(p.name for p in tiny_model_dir.iterdir())
    refused(["score", "--model", str(tiny_model_dir), "--data", str(data),
             "--out", str(tiny_model_dir / "config.jsonl"), *FAST], capsys, data)
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == before


def test_eval_out_onto_its_data_is_refused(tmp_path: Path, data: Path, tiny_model_dir: Path,
                                           capsys: pytest.CaptureFixture) -> None:
    hard = tmp_path / "ev.jsonl"
    os.link(data, hard)
    refused(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--metrics", "loss", "--out", str(hard),
             *FAST], capsys, data)


def test_a_yaml_config_is_never_an_output(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture) -> None:
    config = tmp_path / "select.yaml"
    config.write_text(f"data: {data}\nstrategy: random\nbudget: '2'\n")
    refused(["select", str(config), "--out", str(config)], capsys, config, data)


def test_tiny_model_out_holding_its_corpus_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    corpus = folder / "corpus.txt"
    corpus.write_text("a cat sees a dog.\n" * 50)
    refused(["tiny-model", "--out", str(folder), "--corpus", str(corpus)], capsys, corpus)


def test_train_out_onto_its_model_folder_is_refused(data: Path, tiny_model_dir: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    weights = next(tiny_model_dir.glob("*.safetensors"))
    refused(["train", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(tiny_model_dir)],
            capsys, weights)


@pytest.mark.parametrize("make", [lambda run: run / "model" / "mine.jsonl", lambda run: run / "config.yaml"])
def test_train_run_folder_files_never_land_on_an_input(make: Callable[[Path], Path], tmp_path: Path,
                                                       tiny_model_dir: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    user_data = make(run)
    user_data.parent.mkdir(parents=True, exist_ok=True)
    user_data.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    refused(["train", "--model", str(tiny_model_dir), "--data", str(user_data), "--out", str(run), "--overwrite"],
            capsys, user_data)
