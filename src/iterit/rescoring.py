"""The old home of the re-selection rule, kept so that ``from iterit.rescoring import scorer_for`` works.

The rule lives in :mod:`iterit.reselection.rule` and the scorers in :mod:`iterit.reselection.scorers`.
"""

from iterit.reselection.rule import (
    POOL_HELP,
    POOLS,
    STRATEGIES,
    EpochPick,
    Reselector,
    ScoreFn,
    SelectFn,
    Strategy,
    clamp_pool_size,
    pool_size_for,
    put_rows,
    reference_window,
    resolve_pool,
    score_rows,
    selection_dynamics,
    steps_per_epoch,
    take_rows,
    valid_count,
)
from iterit.reselection.scorers import eval_mode, score_with, scorer_for, scorer_for_rendered

__all__ = [
    "POOLS", "POOL_HELP", "STRATEGIES", "EpochPick", "Reselector", "ScoreFn", "SelectFn", "Strategy",
    "clamp_pool_size", "eval_mode", "pool_size_for", "put_rows", "reference_window", "resolve_pool", "score_rows",
    "score_with", "scorer_for", "scorer_for_rendered", "selection_dynamics", "steps_per_epoch", "take_rows",
    "valid_count",
]
