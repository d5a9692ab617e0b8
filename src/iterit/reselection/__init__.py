"""Re-selection: a new training subset every epoch, chosen with the model as it stands.

* :mod:`~iterit.reselection.rule`: the per-epoch rule apart from any trainer (:class:`Reselector`,
  :class:`EpochPick`, pool layouts, selection dynamics); no torch.
* :mod:`~iterit.reselection.scorers`: ``score_fn(model, samples)`` builders and :func:`eval_mode`.
* :mod:`~iterit.reselection.sampler`: the sampler whose length is the budget, the dataset and collator.
* :mod:`~iterit.reselection.callback`: re-scores and re-selects at each epoch end, records, resumes.
* :mod:`~iterit.reselection.trainer`: :class:`IterITTrainer`, the smallest sampler override.
* :mod:`~iterit.reselection.install`: :func:`build_reselection`, the one builder used by ``iterit train`` and
  by :func:`install_reselection` for a user's own ``Trainer`` / TRL ``SFTTrainer``.

The names below load lazily, so importing the rule does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    **dict.fromkeys(
        ("STRATEGIES", "POOLS", "POOL_HELP", "Strategy", "EpochPick", "Reselector", "ScoreFn", "SelectFn",
         "clamp_pool_size", "pool_size_for", "put_rows", "reference_window", "resolve_pool", "score_rows",
         "selection_dynamics", "steps_per_epoch", "take_rows", "valid_count"),
        "iterit.reselection.rule",
    ),
    **dict.fromkeys(("eval_mode", "score_with", "scorer_for", "scorer_for_rendered"), "iterit.reselection.scorers"),
    **dict.fromkeys(("SelectionSampler", "ResponseOnlyDataset", "PaddingCollator"), "iterit.reselection.sampler"),
    **dict.fromkeys(("STATE_FILE", "ReselectionCallback", "ifd_quantiles", "tracking_scalars"),
                    "iterit.reselection.callback"),
    **dict.fromkeys(("IterITTrainer", "LOSS_WEIGHTINGS", "per_sample_response_loss"), "iterit.reselection.trainer"),
    **dict.fromkeys(("Reselection", "build_reselection", "install_reselection", "check_rows_line_up"),
                    "iterit.reselection.install"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iterit.reselection' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
