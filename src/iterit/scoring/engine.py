"""Score rendered samples: conditioned loss, prior loss and IFD per sample, batched and sharded over ranks."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from iterit.config import ScoreConfig
from iterit.errors import IterITError, check_choice
from iterit.models import eval_mode
from iterit.render import RenderedSample
from iterit.scoring.batches import WorkItem, collect_work_items, padding_share, plan_batches
from iterit.scoring.distributed import distributed_rank_world, gather_objects
from iterit.scoring.head import (
    ScoringModel,
    head_matches_model,
    mean_per_sequence,
    split_model,
    text_config,
    token_losses,
    unwrap_model,
)
from iterit.scoring.table import ScoreTable

if TYPE_CHECKING:
    from iterit.data import Sample

logger = logging.getLogger(__name__)

IFD_FORMS = ("ppl-ratio", "loss-ratio")


@dataclass
class RenderedScores:
    """Per-sample results of :func:`score_rendered`, in input order.

    Unpacks as ``loss_cond, loss_prior, n_tokens, reasons``; ``ifd`` and ``stats`` are attributes.
    """

    loss_cond: np.ndarray
    loss_prior: np.ndarray
    n_tokens: np.ndarray
    reasons: list[str | None]
    ifd: np.ndarray
    stats: dict

    def __iter__(self) -> Iterator[Any]:
        return iter((self.loss_cond, self.loss_prior, self.n_tokens, self.reasons))


def _progress_bar(total: float, desc: str, enabled: bool) -> Any:
    """A tqdm bar in samples (two sequences each), shown only on an interactive terminal and on rank 0."""
    from tqdm.auto import tqdm

    rank, _ = distributed_rank_world()
    show = enabled and rank == 0 and sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit="sample",
        disable=not show,
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}{postfix}]",
    )


def _pad_id(model: Any, pad_token_id: int | None) -> int:
    """Any valid id works for padding (pads are never attended and never targets); prefer the tokenizer's."""
    if pad_token_id is not None:
        return int(pad_token_id)
    config = text_config(getattr(unwrap_model(model), "config", None))
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _run_batches(
    parts: ScoringModel,
    sequences: Sequence[WorkItem],
    batches: Sequence[Sequence[int]],
    pad_id: int,
    head_only: bool,
    bar: Any,
) -> dict[int, float]:
    """Mean response loss of every sequence in ``batches``, keyed by sequence index."""
    results: dict[int, float] = {}
    started, tokens = time.perf_counter(), 0
    for batch in batches:
        items = [sequences[k] for k in batch]
        means = mean_per_sequence(token_losses(parts, items, pad_id, head_only), items)
        results.update(zip(batch, means))
        tokens += sum(item.length for item in items)
        bar.update(len(batch) / 2)  # a sample is two sequences: conditioned and alone
        bar.set_postfix(tokens_s=f"{tokens / max(time.perf_counter() - started, 1e-9):.0f}", refresh=False)
    return results


def score_rendered(
    model: Any,
    rendered: Sequence[RenderedSample],
    *,
    max_batch_tokens: int = 16384,
    ifd_form: str = "ppl-ratio",
    progress: bool = True,
    desc: str = "scoring",
    pad_token_id: int | None = None,
) -> RenderedScores:
    """Score rendered samples with ``model``: conditioned loss, prior loss, IFD, per sample in input order.

    Works on an in-memory model (training mode is restored afterwards). Under an initialised
    ``torch.distributed`` group every rank must call it with the same ``rendered``; each computes its share
    of the batches and all ranks return the whole result.

    Args:
        model: a transformers causal LM (optionally wrapped by peft or DDP).
        rendered: the output of :func:`iterit.render.render_samples`.
        max_batch_tokens: padded tokens per forward pass (rows x longest row); memory grows with it.
        ifd_form: ``"ppl-ratio"`` (exp(loss_cond - loss_prior), IterIT) or ``"loss-ratio"`` (Cherry-LLM).
        progress: show a bar (only on a terminal, only on rank 0).
        desc: the bar's label.
        pad_token_id: id used for padding; any id is correct, the tokenizer's is the natural choice.

    Returns:
        :class:`RenderedScores`; a sample that cannot be scored has NaN losses and IFD and a reason.
    """
    import torch

    check_choice("ifd_form", ifd_form, IFD_FORMS)
    if max_batch_tokens < 1:
        raise IterITError(f"--max-batch-tokens: must be at least 1, got {max_batch_tokens}")
    started = time.perf_counter()
    sequences, reasons = collect_work_items(rendered)
    lengths = [seq.length for seq in sequences]
    batches = plan_batches(lengths, max_batch_tokens)
    rank, world = distributed_rank_world()
    mine = batches[rank::world]
    parts = split_model(model)
    pad_id = _pad_id(model, pad_token_id)
    with eval_mode(parts.model):
        with torch.inference_mode():
            head_only = parts.head_only and bool(sequences)
            if head_only:
                head_only = head_matches_model(
                    parts, sequences[min(range(len(lengths)), key=lengths.__getitem__)], pad_id
                )
            with _progress_bar(sum(len(b) for b in mine) / 2, desc, progress) as bar:
                local = _run_batches(parts, sequences, mine, pad_id, head_only, bar)
            for _ in range(math.ceil(len(batches) / world) - len(mine)):
                # Sharded models (FSDP, DeepSpeed ZeRO-3) gather weights inside every forward, collectively:
                # a rank with one batch fewer runs the smallest batch again, so every rank makes the same calls.
                token_losses(parts, [sequences[k] for k in batches[-1]], pad_id, head_only)
    merged: dict[int, float] = {}
    for part in gather_objects(local, world):
        merged.update(part)
    seconds = time.perf_counter() - started
    stats = {
        "seconds": seconds,
        "sequences": len(sequences),
        "tokens": int(sum(lengths)),
        "padding_share": padding_share(lengths, batches),
        "batches": len(batches),
        "world_size": world,
        "head_only": head_only,
    }
    return _assemble(rendered, sequences, merged, reasons, ifd_form, stats)


def _assemble(
    rendered: Sequence[RenderedSample],
    sequences: Sequence[WorkItem],
    losses: dict[int, float],
    reasons: list[str | None],
    ifd_form: str,
    stats: dict,
) -> RenderedScores:
    """Per-sample arrays from per-sequence losses; non-finite results become NaN with a reason."""
    n = len(rendered)
    loss_cond = np.full(n, np.nan)
    loss_prior = np.full(n, np.nan)
    for k, seq in enumerate(sequences):
        (loss_prior if seq.prior else loss_cond)[seq.sample] = losses[k]
    with np.errstate(all="ignore"):
        ifd = np.exp(loss_cond - loss_prior) if ifd_form == "ppl-ratio" else loss_cond / loss_prior
    reasons = list(reasons)
    for i in range(n):
        if reasons[i] is None and not (math.isfinite(loss_cond[i]) and math.isfinite(loss_prior[i])):
            reasons[i] = "loss is not finite"
        elif reasons[i] is None and not math.isfinite(ifd[i]):
            reasons[i] = "IFD is not finite"
        if reasons[i] is not None:
            ifd[i] = np.nan
            if not math.isfinite(loss_cond[i]) or not math.isfinite(loss_prior[i]):
                loss_cond[i] = loss_prior[i] = np.nan
    n_tokens = np.array([item.span[1] - item.span[0] for item in rendered], dtype=np.int64)
    return RenderedScores(loss_cond, loss_prior, np.maximum(n_tokens, 0), reasons, ifd, stats)


def score_samples(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Sample] | Any,
    *,
    template: str = ScoreConfig.template,
    max_length: int = ScoreConfig.max_length,
    max_batch_tokens: int = ScoreConfig.max_batch_tokens,
    ifd_form: str = ScoreConfig.ifd_form,
    system_prompt: str | None = None,
    progress: bool = True,
    columns: dict[str, str] | str | None = None,
    response_end: str = ScoreConfig.response_end,
) -> ScoreTable:
    """Render ``samples`` with ``tokenizer`` and score them with ``model`` (see :func:`score_rendered`).

    ``samples`` may be a ``datasets.Dataset`` (``columns`` maps its field names, as ``--columns``); the
    table's row ``i`` is then the dataset's row ``i``.
    """
    from iterit.data import as_samples
    from iterit.render import render_samples

    samples = as_samples(samples, columns)
    rendered = render_samples(
        tokenizer, samples, template=template, max_length=max_length, system_prompt=system_prompt,
        response_end=response_end,
    )
    return score_table(
        model,
        samples,
        rendered,
        max_batch_tokens=max_batch_tokens,
        ifd_form=ifd_form,
        progress=progress,
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
    )


def score_table(
    model: Any,
    samples: Sequence[Sample],
    rendered: Sequence[RenderedSample],
    *,
    max_batch_tokens: int = 16384,
    ifd_form: str = "ppl-ratio",
    progress: bool = True,
    pad_token_id: int | None = None,
) -> ScoreTable:
    """The score table of ``samples`` already rendered as ``rendered`` (one item per sample, same order).

    This is what the training loop calls between epochs on its in-memory model: it renders every sample once,
    for training, and re-scores any subset from those token ids without rendering it again.
    """
    if len(samples) != len(rendered):
        raise ValueError(f"{len(samples)} samples but {len(rendered)} rendered items; render each sample once")
    result = score_rendered(
        model,
        rendered,
        max_batch_tokens=max_batch_tokens,
        ifd_form=ifd_form,
        progress=progress,
        pad_token_id=pad_token_id,
    )
    return ScoreTable(
        ids=[sample.id for sample in samples],
        sources=[sample.source for sample in samples],
        ifd=result.ifd,
        loss_cond=result.loss_cond,
        loss_prior=result.loss_prior,
        n_response_tokens=result.n_tokens,
        truncated=np.array([item.truncated for item in rendered], dtype=bool),
        reasons=result.reasons,
        stats={**result.stats, "samples": len(samples), "ifd_form": ifd_form},
    )
