"""IterIT's premises on the demo's data, checked before any training: does the prompt help the base model
predict clean responses (IFD < 1), and do defective responses score above clean ones?

IFD measures what the paper says only under a model the prompt can help; where the premises fail, IFD-based
selection has nothing to select with, and the demo says so next to its table instead of leaving the reader to
guess why a strategy lost. The numbers come from the base model's epoch-0 scores and the demo's ``truth.jsonl``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from iterit.scoring import ScoreTable

CLEAN = "clean"
TARGET_CLEAN_BELOW_1 = 0.8  # the share of clean samples with IFD < 1 at which the filter keeps the clean data
# Responses to another task and generic filler: the defects whose IFD should be highest, since the prompt does not
# help predict them.
SHOULD_SCORE_ABOVE_CLEAN = ("swapped", "filler")


def premise_check(scores: ScoreTable, kinds: Mapping[str, str | None]) -> dict[str, Any]:
    """Share of clean samples with IFD < 1, and per response kind the median IFD and the share under 1.

    Args:
        scores: the base model's scores of the training data.
        kinds: sample id -> its defect or duplicate kind, ``None`` (or ``"clean"``) for a clean, unique record
            (``truth.jsonl``; ``benchmarks/real_llm.py`` names clean ones ``"clean"``).
    """
    by_kind: dict[str, list[float]] = {}
    for sample_id, ifd in zip(scores.ids, scores.ifd):
        if math.isfinite(ifd):
            by_kind.setdefault(kinds[sample_id] or CLEAN, []).append(float(ifd))
    clean = by_kind.get(CLEAN, [])
    medians = {kind: statistics.median(values) for kind, values in sorted(by_kind.items())}
    return {
        "clean_below_1": sum(v < 1 for v in clean) / len(clean) if clean else None,
        "median_ifd": medians,
        "below_1_by_kind": {kind: sum(v < 1 for v in values) / len(values) for kind, values in sorted(by_kind.items())},
        "counts": {kind: len(values) for kind, values in sorted(by_kind.items())},
        "above_clean": {kind: medians[kind] > medians[CLEAN] for kind in SHOULD_SCORE_ABOVE_CLEAN
                        if kind in medians and CLEAN in medians},
    }


def format_premises(premises: dict[str, Any]) -> str:
    """The lines the demo prints before its table: the numbers, then a plain verdict on each premise."""
    share = premises["clean_below_1"]
    lines = ["premises (base model, epoch-0 scores against truth.jsonl):"]
    if share is not None:
        verdict = "holds" if share >= TARGET_CLEAN_BELOW_1 else "FAILS: the IFD < 1 filter throws away clean data"
        lines.append(f"  clean samples with IFD < 1: {share:.0%} (target >= {TARGET_CLEAN_BELOW_1:.0%}): {verdict}")
    medians = "  ".join(f"{kind} {value:.2f}" for kind, value in premises["median_ifd"].items())
    lines.append(f"  median IFD by response kind: {medians}")
    for kind, above in premises["above_clean"].items():
        lines.append(f"  {kind} responses score {'above' if above else 'NOT above'} clean ones"
                     + ("" if above else ": IFD x diversity will not keep them out"))
    return "\n".join(lines)
