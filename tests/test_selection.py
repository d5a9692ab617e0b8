"""Strategies over a score table: candidates, budgets, quotas, errors, and the written subset."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from iterit.config import SelectConfig
from iterit.data import Sample, load_samples
from iterit.diversity import response_tfidf, select_greedy_naive
from iterit.errors import IterITError
from iterit.recipes.select import run as select_run
from iterit.scoring import ScoreTable, write_scores
from iterit.selection import (
    align_scores,
    effective_threshold,
    format_summary,
    manifest_path,
    parse_source_budget,
    resolve_budget,
    select_samples,
    write_selection,
)
from iterit.storage import read_table

RESPONSES = [
    "Paris is the capital of France.",
    "def add(a, b):\n    return a + b",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital of France.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "def sub(a, b):\n    return a - b",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Yes.",
]
SOURCES = ["facts", "code", "facts", "facts", "facts", "code", "facts", "facts"]
IFD = [0.8, 0.6, 0.95, 0.7, 1.2, 0.5, np.nan, 0.3]
REASONS = [None, None, None, None, None, None, "prompt fills max_length", None]


def make_samples(responses=RESPONSES, sources=SOURCES) -> list[Sample]:
    return [
        Sample(
            id=f"{source}:{i}",
            messages=[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": text}],
            source=source,
            format="alpaca",
            origin=i,
            record={"instruction": f"question {i}", "input": "", "output": text},
        )
        for i, (text, source) in enumerate(zip(responses, sources))
    ]


def make_scores(samples, ifd=IFD, reasons=REASONS) -> ScoreTable:
    n = len(samples)
    ifd = np.asarray(ifd, dtype=np.float64)
    return ScoreTable(
        ids=[s.id for s in samples],
        sources=[s.source for s in samples],
        ifd=ifd,
        loss_cond=np.log(np.where(np.isfinite(ifd), ifd, np.nan)),
        loss_prior=np.zeros(n),
        n_response_tokens=np.full(n, 5, dtype=np.int64),
        truncated=np.zeros(n, dtype=bool),
        reasons=list(reasons),
    )


SAMPLES = make_samples()
SCORES = make_scores(SAMPLES)


def test_resolve_budget_shares_counts_and_errors():
    assert resolve_budget(0.05, 52_002) == 2600
    assert resolve_budget(0.01, 10) == 1  # a share never rounds down to nothing
    assert resolve_budget(2600, 10) == 2600
    assert resolve_budget(3.0, 10) == 3
    for bad in (0, -1, 0.0, float("nan"), float("inf"), 1.5, "10", True):
        with pytest.raises(IterITError, match="--budget"):
            resolve_budget(bad, 100)


def test_parse_source_budget():
    assert parse_source_budget("code_alpaca=0.2, gsm8k-train=100") == {"code_alpaca": 0.2, "gsm8k-train": 100}
    assert parse_source_budget(None) == {}
    with pytest.raises(IterITError, match="SOURCE=VALUE"):
        parse_source_budget("code_alpaca")


def test_iterit_picks_candidates_by_the_greedy_and_reports_why_others_were_left_out():
    selection = select_samples(SAMPLES, SCORES, 4, strategy="iterit", decay=0.1)
    pool = np.array([0, 1, 2, 3, 5, 7])  # IFD 1.2 is above the threshold; row 6 has no score
    expected = select_greedy_naive(response_tfidf([RESPONSES[i] for i in pool]), SCORES.ifd[pool], 4, decay=0.1)
    assert selection.indices.tolist() == pool[expected.indices].tolist()
    np.testing.assert_array_equal(selection.diversity, expected.diversity)
    np.testing.assert_array_equal(selection.ifd, SCORES.ifd[selection.indices])
    summary = selection.summary
    assert summary["n_candidates"] == 6 and summary["n_selected"] == 4
    assert summary["excluded"] == {"ifd >= 1": 1, "no score: prompt fills max_length": 1}
    assert summary["sources"]["code"] == {"samples": 2, "candidates": 2, "selected": sum(
        SAMPLES[i].source == "code" for i in selection.indices)}
    assert selection.params["decay"] == 0.1 and selection.params["tfidf_options"]["ngram_range"] == [1, 3]
    assert "excluded, ifd >= 1: 1" in format_summary(summary)


def test_iterit_does_not_pick_the_duplicate_before_fresh_responses_with_decay_zero():
    selection = select_samples(SAMPLES, SCORES, 6, strategy="iterit", decay=0.0)
    picked = selection.indices.tolist()
    # Rows 0 and 3 are the same response; the second comes last, filled by IFD once its n-grams are spent.
    assert picked[-1] in (0, 3) and {0, 3} <= set(picked)
    assert selection.summary["n_greedy"] == 5


def test_ifd_strategy_takes_the_highest_ifd_below_the_threshold():
    selection = select_samples(SAMPLES, SCORES, 3, strategy="ifd", threshold=0.9)
    assert selection.indices.tolist() == [0, 3, 1]
    np.testing.assert_array_equal(selection.score, [0.8, 0.7, 0.6])
    assert np.isnan(selection.diversity).all()


def test_random_is_seeded_and_ignores_the_threshold_but_not_missing_scores():
    first = select_samples(SAMPLES, SCORES, 5, strategy="random", seed=3)
    again = select_samples(SAMPLES, SCORES, 5, strategy="random", seed=3)
    other = [select_samples(SAMPLES, SCORES, 5, strategy="random", seed=s).indices.tolist() for s in range(4, 10)]
    assert first.indices.tolist() == again.indices.tolist()
    assert any(o != first.indices.tolist() for o in other)
    everything = select_samples(SAMPLES, SCORES, 100, strategy="random", seed=0)
    assert sorted(everything.indices.tolist()) == [0, 1, 2, 3, 4, 5, 7]


def test_longest_takes_the_longest_responses_in_characters():
    selection = select_samples(SAMPLES, None, 2, strategy="longest")
    assert selection.indices.tolist() == [6, 4]
    assert selection.score.tolist() == [len(RESPONSES[6]), len(RESPONSES[4])]


def test_full_keeps_every_usable_sample_in_input_order():
    assert select_samples(SAMPLES, SCORES, None, strategy="full").indices.tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert select_samples(SAMPLES, None, None, strategy="full").indices.tolist() == list(range(8))


def test_candidates_restrict_the_pool():
    selection = select_samples(SAMPLES, SCORES, 10, strategy="iterit", candidates=np.array([5, 1, 7]))
    assert sorted(selection.indices.tolist()) == [1, 5, 7]
    assert selection.summary["excluded"]["not in the candidate pool"] == 5
    assert selection.summary["budget_exceeds_candidates"]
    assert "selected them all" in format_summary(selection.summary)


def test_source_quotas_are_exact_and_the_rest_goes_to_unlisted_sources():
    for strategy in ("iterit", "ifd", "random", "longest"):
        selection = select_samples(SAMPLES, SCORES, 4, strategy=strategy, source_budget={"code": 1})
        sources = [SAMPLES[i].source for i in selection.indices]
        assert sources.count("code") == 1 and sources.count("facts") == 3, strategy
    half = select_samples(SAMPLES, SCORES, 4, strategy="ifd", source_budget="code=0.5")
    assert [SAMPLES[i].source for i in half.indices].count("code") == 2
    assert half.summary["quotas"] == {"code": 2, "(other sources)": 2}
    none = select_samples(SAMPLES, SCORES, 3, strategy="iterit", source_budget={"code": 0})
    assert all(SAMPLES[i].source == "facts" for i in none.indices)


def test_source_quota_errors():
    with pytest.raises(IterITError, match="no source named"):
        select_samples(SAMPLES, SCORES, 4, strategy="ifd", source_budget={"math": 1})
    with pytest.raises(IterITError, match="more than the budget"):
        select_samples(SAMPLES, SCORES, 2, strategy="ifd", source_budget={"code": 2, "facts": 1})
    with pytest.raises(IterITError, match="full"):
        select_samples(SAMPLES, SCORES, 2, strategy="full", source_budget={"code": 1})


def test_budget_rounding_floor_is_the_reference_rule():
    assert resolve_budget(0.05, 15_011) == 751  # 750.55 rounded half up
    assert resolve_budget(0.05, 15_011, rounding="floor") == 750  # the reference: math.floor(N * ratio)
    assert resolve_budget(0.05, 52_002, rounding="floor") == 2600
    assert resolve_budget(0.29, 100, rounding="floor") == 29  # 28.999999999999996 in floating point
    assert resolve_budget(0.01, 10, rounding="floor") == 1
    with pytest.raises(IterITError, match="--budget-rounding 'up'.*half-up, floor"):
        resolve_budget(0.05, 100, rounding="up")
    picks = select_samples(SAMPLES, SCORES, 0.35, strategy="ifd", budget_rounding="floor")
    assert len(picks.indices) == 2  # 8 x 0.35 = 2.8


def test_tfidf_text_can_end_with_the_eos_token():
    """The reference fits TF-IDF on output + eos_token: the eos string adds n-grams to every response."""
    plain = select_samples(SAMPLES, SCORES, 3)
    eos = select_samples(SAMPLES, SCORES, 3, tfidf_suffix="<|end_of_text|>")
    assert eos.summary["tfidf_columns"] > plain.summary["tfidf_columns"]
    assert eos.params["tfidf_suffix"] == "<|end_of_text|>" and "tfidf_suffix" not in plain.params


def test_scores_are_matched_by_id_in_any_order():
    order = np.array([7, 6, 5, 4, 3, 2, 1, 0])
    shuffled = make_scores([SAMPLES[i] for i in order], np.array(IFD)[order], [REASONS[i] for i in order])
    aligned = align_scores(SAMPLES, shuffled)
    np.testing.assert_array_equal(aligned.ifd, SCORES.ifd)
    assert select_samples(SAMPLES, shuffled, 3).indices.tolist() == select_samples(SAMPLES, SCORES, 3).indices.tolist()


def test_scores_that_do_not_match_the_data_name_the_ids():
    extra = make_scores(make_samples(RESPONSES + ["new"], SOURCES + ["other"]), IFD + [0.5], REASONS + [None])
    with pytest.raises(IterITError, match=r"not in the data \(e.g. other:8\)"):
        select_samples(SAMPLES, extra, 2)
    fewer = make_scores(SAMPLES[:6], IFD[:6], REASONS[:6])
    with pytest.raises(IterITError, match=r"2 sample id\(s\) have no score \(e.g. facts:6, facts:7\)"):
        select_samples(SAMPLES, fewer, 2)


def test_bad_input_errors():
    with pytest.raises(IterITError, match="needs IFD scores"):
        select_samples(SAMPLES, None, 2, strategy="iterit")
    with pytest.raises(IterITError, match="--strategy"):
        select_samples(SAMPLES, SCORES, 2, strategy="best")
    with pytest.raises(IterITError, match="--budget"):
        select_samples(SAMPLES, SCORES, 0)
    with pytest.raises(IterITError, match="no candidates"):
        select_samples(SAMPLES, SCORES, 2, threshold=0.1)


@settings(max_examples=60, deadline=None)
@given(
    ifd=st.lists(st.one_of(st.floats(0.01, 1.5), st.just(float("nan"))), min_size=8, max_size=8),
    budget=st.integers(1, 12),
    strategy=st.sampled_from(["iterit", "ifd", "random", "longest", "full"]),
    code_quota=st.one_of(st.none(), st.integers(0, 3)),
)
def test_no_strategy_picks_twice_or_outside_the_candidates(ifd, budget, strategy, code_quota):
    scores = make_scores(SAMPLES, ifd, [None if np.isfinite(v) else "failed" for v in ifd])
    quotas = {"code": code_quota} if code_quota is not None and strategy != "full" else None
    try:
        selection = select_samples(SAMPLES, scores, budget, strategy=strategy, source_budget=quotas)
    except IterITError as err:
        assert "no candidates" in str(err) or "more than the budget" in str(err)
        return
    picked = selection.indices.tolist()
    assert len(set(picked)) == len(picked)
    finite = np.isfinite(scores.ifd)
    usable = finite & (scores.ifd < 1.0) if strategy in ("iterit", "ifd") else finite
    assert all(usable[i] for i in picked)
    n_usable = int(usable.sum())
    if strategy == "full":
        assert len(picked) == n_usable
    elif quotas is None:
        assert len(picked) == min(budget, n_usable)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_write_selection_round_trips_through_the_loader(tmp_path, suffix):
    selection = select_samples(SAMPLES, SCORES, 4, strategy="iterit")
    out = tmp_path / f"subset{suffix}"
    manifest = write_selection(SAMPLES, selection, out)
    assert manifest == manifest_path(out)
    assert manifest.name == "subset.manifest" + (".jsonl" if suffix == ".json" else suffix)
    loaded = load_samples([out])
    assert [s.response for s in loaded.samples] == [RESPONSES[i] for i in selection.indices]
    assert [s.record for s in loaded.samples] == [SAMPLES[i].record for i in selection.indices]
    rows, metadata = read_table(manifest)
    assert [r["id"] for r in rows] == [SAMPLES[i].id for i in selection.indices]
    assert [r["rank"] for r in rows] == list(range(4))
    assert [r["score"] for r in rows] == selection.score.tolist()
    assert metadata["params"]["strategy"] == "iterit" and metadata["summary"]["n_selected"] == 4


def test_manifest_writes_unused_values_as_null(tmp_path):
    selection = select_samples(SAMPLES, None, 2, strategy="random")
    manifest = write_selection(SAMPLES, selection, tmp_path / "subset.jsonl")
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert rows[0]["diversity"] is None and rows[0]["ifd"] is None


def test_select_recipe_end_to_end(tmp_path):
    data = tmp_path / "mine.json"
    data.write_text(json.dumps([s.record for s in SAMPLES]))
    loaded = load_samples([data])
    scores_path = tmp_path / "scores.parquet"
    write_scores(make_scores(loaded.samples), scores_path)
    out = tmp_path / "subset.json"
    result = select_run(SelectConfig(data=[str(data)], scores=str(scores_path), budget="0.5", strategy="iterit",
                                     out=str(out), source_budget="mine=2"))
    selection, text = result.selection, result.text
    # The only source is capped at 2 and no unlisted source can take the other half of the budget.
    assert len(selection.indices) == 2 and selection.summary["unfilled"] == 2
    assert "strategy iterit: 2 selected of 6 candidates (8 samples)" in text
    assert "2 of the budget left unfilled" in text
    assert "exact duplicates in the data: 0 (kept" in text
    assert json.loads(out.read_text()) == [loaded.samples[i].record for i in selection.indices]
    with pytest.raises(IterITError, match="--out"):
        select_run(SelectConfig(data=[str(data)], scores=str(scores_path), budget="2", strategy="ifd",
                                out=str(tmp_path / "subset.csv")))
    with pytest.raises(IterITError, match="--budget"):
        select_run(SelectConfig(data=[str(data)], scores=str(scores_path), budget="lots", strategy="ifd", out=str(out)))
    with pytest.raises(IterITError, match="--ngram-max"):
        select_run(SelectConfig(data=[str(data)], scores=str(scores_path), budget="2", strategy="iterit", out=str(out),
                                ngram_max=0))


def test_select_takes_a_datasets_dataset_and_writes_one(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list([{"q": s.record["instruction"], "a": s.response} for s in SAMPLES])
    columns = {"instruction": "q", "output": "a"}
    scores = make_scores(load_samples([dataset], columns=columns).samples)
    from_dataset = select_samples(dataset, scores, 4, strategy="iterit", columns=columns)
    from_samples = select_samples(load_samples([dataset], columns=columns).samples, scores, 4, strategy="iterit")
    assert from_dataset.indices.tolist() == from_samples.indices.tolist()
    subset = dataset.select(from_dataset.indices)
    assert subset["a"] == [RESPONSES[i] for i in from_dataset.indices]

    out = tmp_path / "subset"  # no suffix: a save_to_disk folder, the manifest beside it
    scores_path = tmp_path / "scores.jsonl"
    write_scores(scores, scores_path)
    text = select_run(SelectConfig(data=[dataset], scores=str(scores_path), budget="4", strategy="iterit",
                                   out=str(out), columns=columns)).text
    assert datasets.load_from_disk(str(out)).to_list() == subset.to_list()
    assert manifest_path(out) == tmp_path / "subset.manifest.jsonl" and manifest_path(out).exists()
    assert f"wrote {out} and {tmp_path / 'subset.manifest.jsonl'}" in text


def test_cli_select_with_the_hashing_vectorizer(tmp_path, capsys):
    from iterit.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"s{i}", "instruction": f"Say {i}.", "output": f"word{i} and more words {i % 3}"}) + "\n"
        for i in range(12)
    ))
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(
        json.dumps({"id": f"s{i}", "source": "d", "ifd": 0.5 + i / 100, "loss_cond": 1.0, "loss_prior": 1.2,
                    "n_response_tokens": 5, "truncated": False, "reason": None}) + "\n" for i in range(12)
    ))
    out = tmp_path / "sub.jsonl"
    args = ["select", "--data", str(data), "--scores", str(scores), "--budget", "4", "--out", str(out)]
    assert main([*args, "--vectorizer", "hashing"]) == 0
    assert len(out.read_text().splitlines()) == 4
    assert main([*args, "--vectorizer", "bag"]) == 2
    assert "--vectorizer 'bag'" in capsys.readouterr().err


@pytest.mark.parametrize("strategy", ["iterit", "static", "ifd", "ifd-iterative", "random", "longest", "full"])
def test_train_and_reselection_count_candidates_by_the_one_rule(strategy):
    from iterit.reselection.rule import STRATEGIES, valid_count
    from iterit.selection import candidate_threshold, find_candidates
    from iterit.training import TrainConfig, candidate_count

    if strategy not in STRATEGIES:
        pytest.skip(f"{strategy} is not a train strategy")
    scores = make_scores(SAMPLES)
    rule = STRATEGIES[strategy].select
    picked, _ = find_candidates(len(SAMPLES), scores, rule, 1.0, None)
    config = TrainConfig(output_dir="unused", model="m", data=["d"], strategy=strategy, use_cpu=True)
    assert candidate_count(config, scores) == len(picked)
    assert valid_count(scores, candidate_threshold(rule, 1.0)) == len(picked)


# ---------------------------------------------------------------- token budgets and the options beyond the paper


def token_case(n: int = 40, seed: int = 3):
    """``n`` samples with distinct responses of 1..30 tokens, all scored under IFD 1."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 31, size=n)
    samples = make_samples([" ".join(f"w{i}x{j}" for j in range(k)) for i, k in enumerate(lengths)], ["s"] * n)
    scores = make_scores(samples, ifd=rng.uniform(0.2, 0.95, size=n), reasons=[None] * n)
    scores.n_response_tokens = lengths.astype(np.int64)
    return samples, scores, lengths


@pytest.mark.parametrize("strategy", ["iterit", "ifd", "random", "longest"])
@pytest.mark.parametrize("target", [1, 37, 150, 400, 10_000])
def test_token_budget_keeps_the_ranking_prefix_closest_to_the_target(strategy, target):
    samples, scores, lengths = token_case()
    picked = select_samples(samples, scores, None, strategy=strategy, token_budget=target, seed=5)
    ranking = select_samples(samples, scores, len(samples), strategy=strategy, seed=5).indices
    k = len(picked.indices)
    # The picks are the strategy's own ranking, cut where its running token count is closest to the target.
    assert picked.indices.tolist() == ranking[:k].tolist()
    totals = np.cumsum(lengths[ranking])
    assert abs(totals[k - 1] - target) == np.min(np.abs(totals - target))
    assert abs(int(lengths[picked.indices].sum()) - target) <= max(lengths) / 2 or k == len(samples) or k == 1
    assert picked.summary["n_response_tokens"] == int(lengths[picked.indices].sum())
    assert picked.params["token_budget"] == target and picked.summary["budget"] == k


def test_random_at_another_strategys_tokens_matches_them_within_half_a_sample():
    samples, scores, lengths = token_case(n=200, seed=11)
    iterit = select_samples(samples, scores, 20, strategy="iterit")
    tokens = int(lengths[iterit.indices].sum())
    for seed in range(5):
        random = select_samples(samples, scores, None, strategy="random", seed=seed, token_budget=tokens)
        assert abs(int(lengths[random.indices].sum()) - tokens) <= lengths.max() / 2
    assert "response tokens selected" in format_summary(random.summary)


def test_token_budget_errors():
    samples, scores, _ = token_case()
    with pytest.raises(IterITError, match="--token-budget counts response tokens"):
        select_samples(samples, None, None, strategy="random", token_budget=10)
    with pytest.raises(IterITError, match="strategy full"):
        select_samples(samples, scores, None, strategy="full", token_budget=10)
    with pytest.raises(IterITError, match="whole number"):
        select_samples(samples, scores, None, strategy="random", token_budget=0)
    with pytest.raises(IterITError, match="--source-budget"):
        select_samples(samples, scores, None, strategy="random", token_budget=10, source_budget="s=2")


def test_drop_top_ifd_removes_the_highest_scores_under_the_threshold():
    samples, scores, _ = token_case(n=50)
    kept = np.isfinite(scores.ifd) & (scores.ifd < 1.0)
    bound = effective_threshold(scores, 1.0, 0.2)
    assert bound in scores.ifd and (scores.ifd[kept] >= bound).sum() >= 0.2 * kept.sum()
    assert effective_threshold(scores, 1.0, 0.0) == 1.0
    picked = select_samples(samples, scores, 50, strategy="ifd", drop_top_ifd=0.2)
    assert picked.summary["n_candidates"] == int((scores.ifd < bound).sum())
    assert scores.ifd[picked.indices].max() < bound
    assert picked.params["threshold"] == 1.0 and picked.params["effective_threshold"] == bound
    # Strategies that do not rank by IFD ignore it.
    assert len(select_samples(samples, scores, 50, strategy="random", drop_top_ifd=0.2).indices) == 50
    with pytest.raises(IterITError, match="--drop-top-ifd"):
        effective_threshold(scores, 1.0, 1.0)


def test_l1_diversity_does_not_favour_long_responses():
    # Under the paper's L2 rows a 42-word response's diversity is about sqrt(its distinct n-grams), so it wins
    # against a slightly more complex short one on length alone; L1 rows give every unseen response a
    # diversity of 1, so the higher IFD wins.
    samples = make_samples(["alpha beta", " ".join(f"t{i}" for i in range(42))], ["s", "s"])
    scores = make_scores(samples, ifd=[0.5, 0.45], reasons=[None, None])
    l2 = select_samples(samples, scores, 2, strategy="iterit")
    l1 = select_samples(samples, scores, 2, strategy="iterit", tfidf_options={"norm": "l1"})
    assert l2.indices.tolist() == [1, 0] and l2.diversity[0] > 5
    assert l1.indices.tolist() == [0, 1] and l1.diversity.tolist() == pytest.approx([1.0, 1.0])


def test_cli_select_token_budget_drop_top_and_l1(tmp_path, capsys):
    from iterit.cli import main

    data = tmp_path / "d.jsonl"
    data.write_text("".join(
        json.dumps({"id": f"s{i}", "instruction": f"Say {i}.", "output": " ".join(["word"] * (i + 1))}) + "\n"
        for i in range(12)
    ))
    scores = tmp_path / "s.jsonl"
    scores.write_text("".join(
        json.dumps({"id": f"s{i}", "source": "d", "ifd": 0.5 + i / 100, "loss_cond": 1.0, "loss_prior": 1.2,
                    "n_response_tokens": i + 1, "truncated": False, "reason": None}) + "\n" for i in range(12)
    ))
    out = tmp_path / "sub.jsonl"
    args = ["select", "--data", str(data), "--scores", str(scores), "--out", str(out)]
    assert main([*args, "--strategy", "longest", "--token-budget", "25"]) == 0
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["s11", "s10"]  # 12 + 11 = 23
    assert "response tokens selected: 23 (token budget 25" in capsys.readouterr().out
    assert main([*args, "--budget", "12", "--drop-top-ifd", "0.25", "--diversity-norm", "l1"]) == 0
    assert len(out.read_text().splitlines()) == 8  # the 0.75 quantile (lower) of 0.50..0.61 is 0.58
    assert main([*args, "--diversity-norm", "l3"]) == 2
    assert "--diversity-norm 'l3'" in capsys.readouterr().err
