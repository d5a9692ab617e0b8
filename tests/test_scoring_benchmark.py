"""benchmarks/scoring.py: its baselines compute the same IFD as iterit, and its ceiling counts the right work."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from conftest import load_benchmark
from test_scoring import random_llama, random_rendered

from iterit.render import RenderedSample
from iterit.scoring import score_rendered

bench = load_benchmark("scoring")


def test_every_baseline_computes_iterits_ifd():
    model, rendered = random_llama(), random_rendered(12)
    expected = score_rendered(model, rendered, progress=False).ifd
    cherry = bench.cherry_loop(model, rendered)
    lean = bench.naive_loop(model, rendered)
    reference, padding = bench.reference_batches(model, rendered, pad_id=0)
    for values in (cherry, lean, reference):
        np.testing.assert_allclose(values, expected, rtol=1e-4)
    assert 0 < padding < 1


def _sample(prompt: list[int], response: list[int]) -> RenderedSample:
    ids = prompt + response
    return RenderedSample(ids, (len(prompt), len(ids)), [1, *response], (1, 1 + len(response)))


def test_shared_prefix_is_what_every_prompt_starts_with():
    rendered = [
        _sample([1, 7, 8, 9, 4], [5, 2]),
        _sample([1, 7, 8, 3], [6, 2]),
        _sample([1, 7, 8, 9], [5, 5, 2]),
    ]
    assert bench.shared_prefix_length(rendered) == 3
    assert bench.shared_prefix_length(rendered[:1]) == len(rendered[0].input_ids)


def test_ceiling_is_a_finite_bound_and_the_table_reports_it():
    model, rendered = random_llama(), random_rendered(6)
    ceiling = bench.ceiling_of(model, rendered)
    assert math.isfinite(ceiling["seconds"]) and ceiling["seconds"] > 0
    assert ceiling["prefix"] == bench.shared_prefix_length(rendered)
    rows = bench.race("random", model, SimpleNamespace(pad_token_id=0), rendered, rounds=1)
    assert set(rows) == {"a", "lean", "b", "c", "c="}
    assert all(row["difference"] <= 1e-4 for row in rows.values())
    table = bench.markdown_table("random", model.config.vocab_size, len(rendered), 1, rows, ceiling)
    assert "(a) Cherry-LLM's per-sample loop" in table
    assert "samples/s c/a:" in table and "ceiling on this machine" in table
