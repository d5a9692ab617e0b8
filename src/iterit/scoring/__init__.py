"""Model + rendered samples -> IFD table.

IFD (instruction-following difficulty, Li et al. 2024, used by IterIT as "complexity") of a sample is

    IFD = PPL(response | prompt) / PPL(response) = exp(loss_cond - loss_prior)

where ``loss_cond`` is the mean token cross-entropy of the response given the conversation before it and
``loss_prior`` the same for the response rendered alone. IFD < 1 means the prompt helps the model produce
the response; IFD >= 1 means it does not (IterIT drops those). ``ifd_form="loss-ratio"`` gives Cherry-LLM's
``loss_cond / loss_prior`` instead.

Why this is fast (the reference wastes most of its compute):
- every sequence (conditioned text and response alone, as separate work items) is sorted by length and packed
  into batches under a token budget, so padding stays small; the original order is restored afterwards;
- each sequence is cut after the response, and the vocabulary head is applied only at the positions that
  predict response tokens, in row chunks, so no ``batch x sequence x vocabulary`` logits ever exist;
- whole batches are dealt to ranks under ``torch.distributed``; since a batch is computed the same way
  whichever rank runs it, the gathered result equals a single-process run.

The package's modules follow the data: ``batches`` (texts -> length-sorted batches), ``head`` (backbone + output
head), ``engine`` (batches -> per-sample losses and IFD), ``table`` (the score table, its summary and files),
``distributed`` (ranks); models load through :mod:`iterit.models`. The resumable ``iterit score`` is
:mod:`iterit.recipes.score`.
"""

from iterit.models import (  # re-exported: loading lives in models
    DTYPES,
    load_model,
    resolve_device,
    resolve_dtype,
)
from iterit.scoring.batches import padding_share, plan_batches
from iterit.scoring.distributed import (
    close_distributed,
    close_distributed_at_exit,
    distributed_rank_world,
    init_distributed_from_env,
)
from iterit.scoring.engine import IFD_FORMS, RenderedScores, score_rendered, score_samples, score_table
from iterit.scoring.table import (
    MOSTLY_UNHELPFUL,
    UNHELPFUL_PROMPTS_HINT,
    ScoreTable,
    format_summary,
    read_scores,
    summarize_scores,
    write_scores,
)

__all__ = [
    "DTYPES",
    "IFD_FORMS",
    "MOSTLY_UNHELPFUL",
    "UNHELPFUL_PROMPTS_HINT",
    "RenderedScores",
    "ScoreTable",
    "close_distributed",
    "close_distributed_at_exit",
    "distributed_rank_world",
    "format_summary",
    "init_distributed_from_env",
    "load_model",
    "padding_share",
    "plan_batches",
    "read_scores",
    "resolve_device",
    "resolve_dtype",
    "score_rendered",
    "score_samples",
    "score_table",
    "summarize_scores",
    "write_scores",
]
