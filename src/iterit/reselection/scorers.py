"""How re-selection scores the pool: ``score_fn(model, samples) -> ScoreTable`` builders, and eval mode.

A scorer is any callable ``score_fn(model, samples)``; :func:`scorer_for` renders the samples again with a
tokenizer (for users' own Trainers), :func:`scorer_for_rendered` reuses the token ids rendered once for
training (what ``iterit train`` does). Every scoring of a training model goes through :func:`eval_mode`, so
dropout is off and no gradient is kept, and the model is back in the mode it was in afterwards. ``eval_mode``
lives in :mod:`iterit.models` because scoring and evaluation (floors below this one) use it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iterit.data import Sample
from iterit.models import eval_mode
from iterit.reselection.rule import ScoreFn
from iterit.scoring import ScoreTable

__all__ = ["eval_mode", "score_with", "scorer_for", "scorer_for_rendered"]


def score_with(model: Any, score_fn: ScoreFn, samples: Sequence[Sample]) -> ScoreTable:
    """``score_fn(model, samples)`` under :func:`eval_mode`."""
    with eval_mode(model):
        return score_fn(model, samples)


def scorer_for(tokenizer: Any, **options: Any) -> ScoreFn:
    """``score_fn(model, samples)``: :func:`iterit.scoring.score_samples` with ``tokenizer`` and ``options``
    (template, max_length, max_batch_tokens, system_prompt, progress) bound, as the callback calls it."""
    from iterit.scoring import score_samples

    def score(model: Any, samples: Sequence[Sample]) -> ScoreTable:
        return score_samples(model, tokenizer, samples, **options)

    return score


def scorer_for_rendered(samples: Sequence[Sample], rendered: Sequence[Any], **options: Any) -> ScoreFn:
    """``score_fn(model, subset)`` that scores any subset of ``samples`` from their ``rendered`` token ids.

    The training loop renders every sample once, for training; re-scoring a pool then costs forwards only.
    ``options`` (max_batch_tokens, ifd_form, progress, pad_token_id) go to :func:`iterit.scoring.score_table`.
    """
    from iterit.scoring import score_table

    position = {sample.id: k for k, sample in enumerate(samples)}
    if len(position) != len(samples):
        raise ValueError("sample ids repeat; load_samples makes them unique")

    def score(model: Any, subset: Sequence[Sample]) -> ScoreTable:
        items = [rendered[position[sample.id]] for sample in subset]
        return score_table(model, subset, items, **options)

    return score
