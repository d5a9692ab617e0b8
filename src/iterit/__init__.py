"""iterit: choose what an LLM is fine-tuned on, with IterIT (Jia et al., 2024, arXiv:2412.17365).

Complexity is IFD = PPL(response | instruction) / PPL(response) under the model being tuned; diversity is the
TF-IDF weight of the response; the greedy picks IFD x diversity, decaying the n-grams each pick covers. While
the model trains, a candidate pool is re-scored after every epoch and the next epoch's subset chosen again.

The names below are the public API; they load lazily so that ``import iterit`` (and ``iterit --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "IterITError": "iterit.errors",
    "Sample": "iterit.data",
    "LoadedData": "iterit.data",
    "load_samples": "iterit.data",
    "write_samples": "iterit.data",
    "RenderedSample": "iterit.render",
    "render_samples": "iterit.render",
    "ScoreTable": "iterit.scoring",
    "score_samples": "iterit.scoring",
    "read_scores": "iterit.scoring",
    "load_model": "iterit.scoring",
    "Selection": "iterit.selection",
    "select_samples": "iterit.selection",
    "select_greedy": "iterit.diversity",
    "TrainConfig": "iterit.training",
    "train": "iterit.training",
    "SelectionSampler": "iterit.reselection",
    "ReselectionCallback": "iterit.reselection",
    "IterITTrainer": "iterit.reselection",
    "install_reselection": "iterit.reselection",
    "build_reselection": "iterit.reselection",
    "scorer_for": "iterit.reselection",
    "scorer_for_rendered": "iterit.reselection",
    "evaluate": "iterit.evaluation",
    "write_report": "iterit.report",
    "build_tiny_model": "iterit.demo.tiny_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'iterit' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
