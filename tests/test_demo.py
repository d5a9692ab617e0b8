"""``iterit demo --quick``: the whole comparison runs, judges every strategy, and writes its table and report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from iterit.cli import main
from iterit.demo.compare import base_model, format_comparison
from iterit.errors import IterITError


@pytest.mark.slow
def test_quick_demo_compares_every_strategy(tmp_path: Path, capsys: pytest.CaptureFixture,
                                           caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "demo"
    args = ["demo", "--quick", "--out", str(out), "--cache", str(tmp_path / "cache"), "--strategies", "iterit,static,random,random-tokens,full"]
    with caplog.at_level(logging.INFO):
        assert main(args) == 0
    printed, console = capsys.readouterr()
    # The console (issue 18): no transformers bars, each warning once, the table and the report path last.
    assert not any(bar in printed + console for bar in ("Loading weights", "Writing model shards", "it/s]"))
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings and len(warnings) == len(set(warnings)), warnings
    assert printed.rstrip().splitlines()[-1] == f"report: {out / 'report.html'}"
    comparison = json.loads((out / "comparison.json").read_text())
    rows = comparison["strategies"]
    assert list(rows) == ["iterit", "static", "random", "random-tokens", "full"]
    assert all(f"\n{name} " in printed for name in rows) and "exact match per family" in printed
    # random-tokens trains on iterit's response tokens per epoch, within half of the longest response.
    from iterit.scoring import read_scores

    longest = int(read_scores(out / "runs" / "iterit" / "epochs" / "0" / "scores.parquet").n_response_tokens.max())
    epochs = comparison["settings"]["epochs"]
    per_epoch = {name: rows[name]["response_tokens"] / epochs for name in ("iterit", "random-tokens")}
    assert abs(per_epoch["random-tokens"] - per_epoch["iterit"]) <= longest / 2 + 0.5
    # The premises (issue 15) come from the base model's scores, written once for every strategy, and truth.jsonl.
    from iterit.demo.premises import premise_check

    truth = {row["id"]: row["defect"] for row in map(json.loads, (out / "data" / "truth.jsonl").read_text().splitlines())}
    assert comparison["premises"] == json.loads(json.dumps(premise_check(read_scores(out / "scores.parquet"), truth)))
    assert "premises (base model, epoch-0 scores against truth.jsonl):" in printed
    assert "clean samples with IFD < 1:" in printed
    budget_picks = {name: row["picks"] for name, row in rows.items() if name != "random-tokens"}
    assert budget_picks["iterit"] == budget_picks["static"] == budget_picks["random"] < budget_picks["full"]
    assert rows["full"]["train_tokens"] > 3 * rows["iterit"]["train_tokens"]
    for row in rows.values():
        assert row["loss"] is not None and 0 <= row["exact"] <= 1 and 0 <= row["defective_share"] <= 1
        assert set(row["per_family"]) == set(comparison["settings"]["families"])
    # full trains on every duplicate copy; a selection at 8% cannot hold as many.
    assert rows["full"]["duplicates_selected"] > rows["iterit"]["duplicates_selected"]
    assert (out / "report.html").exists() and (out / "runs" / "iterit" / "epochs" / "1" / "selection.parquet").exists()
    assert "iterit" in format_comparison(comparison)


def test_base_model_is_built_once_and_cached(tmp_path: Path) -> None:
    first = base_model(tmp_path, seed=3, quick=True)
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    again = base_model(tmp_path, seed=3, quick=True)
    assert again == first and (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(tmp_path.glob(".building-*"))


def test_unknown_strategy_is_one_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--strategies", "iterit,best"]) == 2
    assert "unknown best" in capsys.readouterr().err
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--strategies", "random-tokens,iterit"]) == 2
    assert "list iterit before it" in capsys.readouterr().err
    with pytest.raises(IterITError, match="--ratio"):
        from iterit.demo.compare import run_demo

        run_demo(tmp_path / "d", ratio=1.5)


def test_demo_into_a_foreign_folder_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    userdir = tmp_path / "userdir"
    (userdir / "data").mkdir(parents=True)
    (userdir / "data" / "mine.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    assert main(["demo", "--quick", "--out", str(userdir), "--cache", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    assert (userdir / "data" / "mine.jsonl").read_text() == '{"instruction": "a", "output": "b"}\n'
    assert not (tmp_path / "cache").exists()  # refused before the base model was built


@pytest.mark.slow
def test_demo_rerun_resumes_and_other_settings_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["demo", "--quick", "--out", str(tmp_path / "demo"), "--cache", str(tmp_path / "cache"),
            "--strategies", "random", "--epochs", "1"]
    assert main(args) == 0
    assert main(args) == 0  # the same settings into its own folder: allowed, as before
    capsys.readouterr()
    assert main([*args, "--seed", "1"]) == 2
    assert "differs in: seed" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_a_preset_and_evaluates_as_it_trained(tmp_path: Path) -> None:
    """quality.py's "preset reference" row: the preset's rendering, pool and loss reach training and evaluation."""
    import yaml

    from iterit.demo.compare import run_demo

    comparison = run_demo(tmp_path / "demo", quick=True, strategies="iterit", pool="reference", preset="reference",
                          cache=tmp_path / "cache")
    assert comparison["settings"]["preset"] == "reference"
    config = yaml.safe_load((tmp_path / "demo" / "runs" / "iterit" / "config.yaml").read_text())
    assert {key: config[key] for key in ("preset", "template", "response_end", "input_join", "loss_weighting",
                                         "tfidf_text", "budget_rounding", "pool", "system_prompt")} == {
        "preset": "reference", "template": "llama-3.1", "response_end": "eos", "input_join": "reference",
        "loss_weighting": "sample", "tfidf_text": "response+eos", "budget_rounding": "floor", "pool": "reference",
        "system_prompt": "You are a helpful assistant."}
    # The demo's model-size settings stay the demo's: the reference's 2e-5 would not move a tiny model.
    assert config["learning_rate"] == 2e-3 and config["per_device_train_batch_size"] == 16
    row = comparison["strategies"]["iterit"]
    assert row["loss"] is not None and 0 <= row["exact"] <= 1


def test_premise_check_reads_the_scores_against_the_truth() -> None:
    import numpy as np

    from iterit.demo.premises import format_premises, premise_check
    from iterit.scoring import ScoreTable

    ids = ["a", "b", "c", "d", "e", "f"]
    ifd = np.array([0.5, 0.7, 1.3, 0.9, 1.2, np.nan])
    table = ScoreTable(ids, ["s"] * 6, ifd, ifd, ifd, np.ones(6, dtype=np.int64), np.zeros(6, dtype=bool),
                       [None] * 5 + ["prompt fills max_length"])
    kinds = {"a": None, "b": None, "c": None, "d": "swapped", "e": "filler", "f": None}
    found = premise_check(table, kinds)
    assert found["clean_below_1"] == 2 / 3  # the unscored clean sample is not counted
    assert found["median_ifd"] == {"clean": 0.7, "filler": 1.2, "swapped": 0.9}
    assert found["above_clean"] == {"swapped": True, "filler": True}
    text = format_premises(found)
    assert "clean samples with IFD < 1: 67% (target >= 80%): FAILS" in text
    assert "swapped responses score above clean ones" in text
