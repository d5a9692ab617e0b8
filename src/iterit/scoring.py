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

The resumable ``iterit score`` command (shard files + fingerprint) lives at the end of this module.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iterit.errors import IterITError
from iterit.render import RenderedSample

if TYPE_CHECKING:
    from iterit.data import Sample

logger = logging.getLogger(__name__)

IFD_FORMS = ("ppl-ratio", "loss-ratio")
# When most prompts do not help the model predict their responses, IFD < 1 keeps mostly the samples whose long
# responses barely depend on the prompt (the demo shows this on a base model that never saw the chat format).
MOSTLY_UNHELPFUL = 0.5
UNHELPFUL_PROMPTS_HINT = (
    "warning: for most samples the prompt makes the response harder to predict, so the IFD < 1 filter would drop "
    "most of the data; this model may not know the chat template yet: check --template, fine-tune an epoch on a "
    "random subset first, or raise --threshold"
)
DTYPES = ("auto", "float32", "bfloat16", "float16")
# Rows of vocabulary logits computed at once: 64 MiB of float32 per chunk bounds the head's memory.
HEAD_CHUNK_BYTES = 64 * 1024 * 1024
# Largest per-token loss difference between the head-only path and the model's own logits that we accept
# as "same head" when checking an unknown architecture (float32 / half precision).
HEAD_CHECK_TOLERANCE = {"float32": 1e-3, "half": 5e-2}


@dataclass
class ScoreTable:
    """IFD scores, one row per sample, in input order. Missing scores are NaN with a ``reason``.

    ``ifd = exp(loss_cond - loss_prior)`` = PPL(response | prompt) / PPL(response). Stored as float64
    (never bf16: the reference's bf16 storage tied rankings and rounded values near 1 up to 1).
    ``stats`` (added, defaults empty) holds how the table was computed: seconds, tokens, padding share.
    """

    ids: list[str]
    sources: list[str]
    ifd: np.ndarray  # float64, NaN = no score
    loss_cond: np.ndarray  # float64
    loss_prior: np.ndarray  # float64
    n_response_tokens: np.ndarray  # int64
    truncated: np.ndarray  # bool
    reasons: list[str | None]
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per sample in the output column order; NaN becomes ``None`` (null in Parquet/JSON)."""
        return [
            {
                "id": self.ids[i],
                "source": self.sources[i],
                "ifd": _float_or_none(self.ifd[i]),
                "loss_cond": _float_or_none(self.loss_cond[i]),
                "loss_prior": _float_or_none(self.loss_prior[i]),
                "n_response_tokens": int(self.n_response_tokens[i]),
                "truncated": bool(self.truncated[i]),
                "reason": self.reasons[i],
            }
            for i in range(len(self.ids))
        ]

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], stats: dict | None = None) -> ScoreTable:
        """Inverse of :meth:`to_rows`: ``None`` scores come back as NaN."""

        def floats(key: str) -> np.ndarray:
            return np.array([np.nan if row[key] is None else row[key] for row in rows], dtype=np.float64)

        return cls(
            ids=[str(row["id"]) for row in rows],
            sources=[str(row["source"]) for row in rows],
            ifd=floats("ifd"),
            loss_cond=floats("loss_cond"),
            loss_prior=floats("loss_prior"),
            n_response_tokens=np.array([row["n_response_tokens"] for row in rows], dtype=np.int64),
            truncated=np.array([bool(row["truncated"]) for row in rows], dtype=bool),
            reasons=[row["reason"] for row in rows],
            stats=dict(stats or {}),
        )


def _float_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


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


# ---------------------------------------------------------------------------------------------------------
# Work items and batches


@dataclass(slots=True)
class _Sequence:
    """One forward pass's worth of tokens: a sample's conditioned text or its response alone."""

    sample: int
    prior: bool
    ids: list[int]
    span: tuple[int, int]

    @property
    def length(self) -> int:
        # The last response token is only a target: nothing after it is predicted, so it is not fed.
        return self.span[1] - 1


def _span_problem(item: RenderedSample) -> str | None:
    """Why a rendered sample's spans cannot be scored, or None."""
    for ids, (start, end) in ((item.input_ids, item.span), (item.prior_ids, item.prior_span)):
        if end <= start:
            return "empty response"
        if start < 1 or end > len(ids):
            return f"response span {(start, end)} lies outside its {len(ids)} tokens"
    return None


def _collect_sequences(rendered: Sequence[RenderedSample]) -> tuple[list[_Sequence], list[str | None]]:
    """Two work items per scorable sample; the reason for each sample that has none."""
    sequences: list[_Sequence] = []
    reasons: list[str | None] = []
    for index, item in enumerate(rendered):
        reason = item.reason or _span_problem(item)
        reasons.append(reason)
        if reason is None:
            sequences.append(_Sequence(index, False, item.input_ids, tuple(item.span)))
            sequences.append(_Sequence(index, True, item.prior_ids, tuple(item.prior_span)))
    return sequences, reasons


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_padding: float = 0.1) -> list[list[int]]:
    """Group item indices into batches of at most ``max_batch_tokens`` padded tokens.

    Longest first (an out-of-memory shows on the first batch, not after an hour). Neighbours in length order
    have nearly equal lengths, so padding to the longest in a batch wastes little; where lengths are sparse
    (a few hundred samples, a long tail) a batch is also closed before its padding exceeds ``max_padding`` of
    its tokens, which bounds the overall padding share by ``max_padding``. A single item longer than the
    budget forms its own batch. Ties are broken by index, so the plan is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda k: (-lengths[k], k))
    batches: list[list[int]] = []
    current: list[int] = []
    width = real = 0
    for k in order:
        computed = width * (len(current) + 1)
        if current and (computed > max_batch_tokens or computed - real - lengths[k] > max_padding * computed):
            batches.append(current)
            current = []
        if not current:
            width, real = lengths[k], 0
        current.append(k)
        real += lengths[k]
    if current:
        batches.append(current)
    return batches


def padding_share(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the computed (padded) tokens that are padding."""
    computed = sum(max(lengths[k] for k in batch) * len(batch) for batch in batches)
    real = sum(lengths[k] for batch in batches for k in batch)
    return 1.0 - real / computed if computed else 0.0


# ---------------------------------------------------------------------------------------------------------
# The model, split into backbone + head


@dataclass
class _ScoringModel:
    """What the scorer calls: the whole causal LM, and where possible its backbone and output head."""

    model: Any
    backbone: Any | None
    head: Any | None
    softcap: float | None
    logit_multiplier: float
    device: Any

    @property
    def head_only(self) -> bool:
        return self.backbone is not None and self.head is not None


def _unwrap_model(model: Any) -> Any:
    """The transformers causal LM inside DDP / DataParallel / peft wrappers."""
    import torch

    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft's PeftModel: LoRA layers stay injected in the base model
        model = model.get_base_model()
    return model


def _resolve_model(model: Any) -> _ScoringModel:
    """Split a causal LM into backbone (hidden states) and head (vocabulary projection).

    ``base_model`` is transformers' generic accessor for the backbone of any ``*ForCausalLM``; the head is
    ``get_output_embeddings()``. Logit transforms that sit between them in known architectures are applied
    here (Gemma's final soft-capping, Cohere's ``logit_scale``, Granite's ``logits_scaling``); anything else
    is caught by :func:`_head_matches_model` and falls back to the model's own (full) logits.
    """
    inner = _unwrap_model(model)
    backbone = getattr(inner, "base_model", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if backbone is inner or not callable(backbone):
        backbone = None
    if head is not None and getattr(head, "weight", None) is None:  # e.g. a quantised head: use full logits
        head = None
    config = _text_config(getattr(inner, "config", None))
    softcap = getattr(config, "final_logit_softcapping", None) or None
    multiplier = float(getattr(config, "logit_scale", None) or 1.0)
    scaling = getattr(config, "logits_scaling", None)
    if scaling:
        multiplier /= float(scaling)
    embeddings = inner.get_input_embeddings()
    return _ScoringModel(inner, backbone, head, softcap, multiplier, embeddings.weight.device)


def _text_config(config: Any) -> Any:
    """The language model's config (multimodal models nest it as ``text_config``)."""
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _batch_tensors(sequences: Sequence[_Sequence], device: Any, pad_id: int) -> tuple[Any, Any]:
    """Right-padded input ids and position ids (0, 1, ... in every row).

    No attention mask is needed, and leaving it out is exact: with right padding every pad comes *after*
    each real token of its row, so the causal mask already hides all pads from every position we read.
    Without a padding mask, SDPA takes its causal kernel instead of a materialised batch x length x length
    mask (about 1.5x faster on CPU for a 32k-vocabulary model, measured by benchmarks/scoring.py).
    """
    import torch

    width = max(seq.length for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : seq.length] = torch.tensor(seq.ids[: seq.length], dtype=torch.long)
    positions = torch.arange(width, dtype=torch.long).unsqueeze(0).expand(len(sequences), -1)
    return input_ids.to(device), positions.to(device)


def _target_index(sequences: Sequence[_Sequence]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every response token: its row, the position predicting it (token position - 1), its id."""
    rows, cols, targets = [], [], []
    for row, seq in enumerate(sequences):
        start, end = seq.span
        rows.append(np.full(end - start, row, dtype=np.int64))
        cols.append(np.arange(start - 1, end - 1, dtype=np.int64))
        targets.append(np.asarray(seq.ids[start:end], dtype=np.int64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(targets)


def _chunked_cross_entropy(parts: _ScoringModel, hidden: Any, targets: Any) -> Any:
    """Per-token float32 cross-entropy of ``head(hidden)`` against ``targets``, a few rows at a time."""
    import torch
    import torch.nn.functional as F

    vocab = parts.head.weight.shape[0]
    rows_per_chunk = max(1, HEAD_CHUNK_BYTES // (4 * vocab))
    losses = []
    head_device = parts.head.weight.device
    for start in range(0, hidden.shape[0], rows_per_chunk):
        chunk = hidden[start : start + rows_per_chunk].to(head_device)
        logits = _transform_logits(parts, parts.head(chunk).float())
        target = targets[start : start + rows_per_chunk].to(head_device)
        losses.append(F.cross_entropy(logits, target, reduction="none"))
    return torch.cat(losses) if losses else torch.zeros(0)


def _transform_logits(parts: _ScoringModel, logits: Any) -> Any:
    """Apply what the architecture applies between the head and its returned logits."""
    import torch

    if parts.logit_multiplier != 1.0:
        logits = logits * parts.logit_multiplier
    if parts.softcap:
        logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits


def _token_losses(parts: _ScoringModel, sequences: Sequence[_Sequence], pad_id: int, head_only: bool) -> Any:
    """Per-token losses of a batch's response tokens, in (row, position) order, as float32 on CPU."""
    import torch
    import torch.nn.functional as F

    input_ids, positions = _batch_tensors(sequences, parts.device, pad_id)
    rows, cols, targets = (torch.from_numpy(a) for a in _target_index(sequences))
    if head_only:
        out = parts.backbone(input_ids=input_ids, position_ids=positions, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        picked = hidden[rows.to(hidden.device), cols.to(hidden.device)]
        return _chunked_cross_entropy(parts, picked, targets).cpu()
    # Fallback for heads we cannot reproduce: the model's own logits over the batch, gathered at the targets.
    logits = parts.model(input_ids=input_ids, position_ids=positions, use_cache=False).logits
    picked = logits[rows.to(logits.device), cols.to(logits.device)].float()
    return F.cross_entropy(picked, targets.to(picked.device), reduction="none").cpu()


def _mean_per_sequence(token_losses: Any, sequences: Sequence[_Sequence]) -> list[float]:
    """Mean loss of each sequence's response tokens (float64 accumulation)."""
    values = token_losses.double().numpy()
    bounds = np.cumsum([0] + [seq.span[1] - seq.span[0] for seq in sequences])
    return [float(values[bounds[k] : bounds[k + 1]].mean()) for k in range(len(sequences))]


def _head_matches_model(parts: _ScoringModel, probe: _Sequence, pad_id: int) -> bool:
    """Whether backbone + head (+ known transforms) reproduce the model's own logits on one short sequence.

    This protects architectures with extra logit transforms we do not know of: they fall back to full logits.
    """
    import torch

    fast = _token_losses(parts, [probe], pad_id, head_only=True)
    full = _token_losses(parts, [probe], pad_id, head_only=False)
    half = parts.head.weight.dtype in (torch.float16, torch.bfloat16)
    tolerance = HEAD_CHECK_TOLERANCE["half" if half else "float32"]
    difference = float((fast - full).abs().max())
    if not difference <= tolerance:  # also catches NaN
        logger.warning(
            "the output head of %s does not reproduce the model's logits (max loss difference %.3g); "
            "scoring with full logits, which is slower and uses more memory",
            type(parts.model).__name__,
            difference,
        )
        return False
    return True


# ---------------------------------------------------------------------------------------------------------
# Distributed helpers


def distributed_rank_world() -> tuple[int, int]:
    """(rank, world size) of an initialised ``torch.distributed`` group, else (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed_from_env() -> tuple[int, int]:
    """Join the process group a launcher describes (``torchrun``/``accelerate launch`` set WORLD_SIZE).

    gloo on CPU, nccl on CUDA. Returns (rank, world size); (0, 1) when not launched distributed.
    """
    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and dist.is_available() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return distributed_rank_world()


def _gather(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (one collective call)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


# ---------------------------------------------------------------------------------------------------------
# The engine


def _progress_bar(total: float, desc: str, enabled: bool) -> Any:
    """A tqdm bar in samples (two sequences each), shown only on an interactive terminal and on rank 0."""
    from tqdm.auto import tqdm

    rank, _ = distributed_rank_world()
    show = enabled and rank == 0 and sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit="sample", disable=not show, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} [{elapsed}<{remaining}, {rate_fmt}{postfix}]")


def _pad_id(model: Any, pad_token_id: int | None) -> int:
    """Any valid id works for padding (pads are never attended and never targets); prefer the tokenizer's."""
    if pad_token_id is not None:
        return int(pad_token_id)
    config = _text_config(getattr(_unwrap_model(model), "config", None))
    for name in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        if value is not None:
            return int(value)
    return 0


def _run_batches(
    parts: _ScoringModel,
    sequences: Sequence[_Sequence],
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
        means = _mean_per_sequence(_token_losses(parts, items, pad_id, head_only), items)
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

    _check_choice("ifd_form", ifd_form, IFD_FORMS)
    if max_batch_tokens < 1:
        raise IterITError(f"--max-batch-tokens: must be at least 1, got {max_batch_tokens}")
    started = time.perf_counter()
    sequences, reasons = _collect_sequences(rendered)
    lengths = [seq.length for seq in sequences]
    batches = plan_batches(lengths, max_batch_tokens)
    rank, world = distributed_rank_world()
    mine = batches[rank::world]
    parts = _resolve_model(model)
    pad_id = _pad_id(model, pad_token_id)
    was_training = parts.model.training
    parts.model.eval()
    try:
        with torch.inference_mode():
            head_only = parts.head_only and bool(sequences)
            if head_only:
                head_only = _head_matches_model(parts, sequences[min(range(len(lengths)), key=lengths.__getitem__)], pad_id)
            with _progress_bar(sum(len(b) for b in mine) / 2, desc, progress) as bar:
                local = _run_batches(parts, sequences, mine, pad_id, head_only, bar)
    finally:
        parts.model.train(was_training)
    merged: dict[int, float] = {}
    for part in _gather(local, world):
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
    sequences: Sequence[_Sequence],
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
    samples: Sequence[Sample],
    *,
    template: str = "auto",
    max_length: int = 2048,
    max_batch_tokens: int = 16384,
    ifd_form: str = "ppl-ratio",
    system_prompt: str | None = None,
    progress: bool = True,
) -> ScoreTable:
    """Render ``samples`` with ``tokenizer`` and score them with ``model`` (see :func:`score_rendered`).

    This is the function the training loop calls between epochs on its in-memory model.
    """
    from iterit.render import render_samples

    rendered = render_samples(
        tokenizer, samples, template=template, max_length=max_length, system_prompt=system_prompt
    )
    result = score_rendered(
        model,
        rendered,
        max_batch_tokens=max_batch_tokens,
        ifd_form=ifd_form,
        progress=progress,
        pad_token_id=getattr(tokenizer, "pad_token_id", None),
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


def _check_choice(flag: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise IterITError(f"--{flag.replace('_', '-')}: '{value}' is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------------------------
# Loading, summary, files


def resolve_device(device: str = "auto") -> str:
    """``auto``: this rank's CUDA device when there is one (``cuda:LOCAL_RANK`` under a launcher), else CPU."""
    import torch

    if device != "auto":
        return device
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: float32 on CPU (exact, and CPUs gain little from half precision), bfloat16 on a GPU that has it."""
    import torch

    _check_choice("dtype", dtype, DTYPES)
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def load_model(model_id_or_dir: str, *, dtype: str = "auto", device: str = "auto") -> tuple[Any, Any]:
    """Load a causal LM and its tokenizer for scoring, in eval mode on ``device``.

    Raises:
        IterITError: the model or tokenizer cannot be loaded (the message says why, without a traceback).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from iterit.models import resolve_model

    source = resolve_model(model_id_or_dir)
    target = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    local_only = _offline()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, device_map=target, local_files_only=local_only
        )
    except (OSError, ValueError, KeyError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = " (HF_HUB_OFFLINE is set: only local folders and cached models load)" if local_only else ""
        raise IterITError(
            f"--model {model_id_or_dir}: cannot be loaded{hint}: {first}; "
            "give a local model folder (iterit cannot load one without config.json, weights and a tokenizer) "
            "or a Hugging Face model id"
        ) from None
    model.eval()
    return model, tokenizer


def summarize_scores(table: ScoreTable) -> dict[str, Any]:
    """Counts, missing scores by reason, IFD quantiles, share with IFD >= 1 and throughput."""
    scored = np.isfinite(table.ifd)
    values = table.ifd[scored]
    quantiles = {
        f"p{int(q * 100)}": float(np.quantile(values, q)) if values.size else None
        for q in (0.05, 0.25, 0.5, 0.75, 0.95)
    }
    seconds = float(table.stats.get("seconds", 0.0)) or float("nan")
    return {
        "samples": len(table),
        "scored": int(scored.sum()),
        "missing": dict(Counter(reason for reason in table.reasons if reason is not None).most_common()),
        "truncated": int(table.truncated.sum()),
        "ifd_quantiles": quantiles,
        "share_ifd_ge_1": float((values >= 1.0).mean()) if values.size else None,
        "seconds": table.stats.get("seconds"),
        "samples_per_s": len(table) / seconds if math.isfinite(seconds) else None,
        "tokens_per_s": table.stats.get("tokens", 0) / seconds if math.isfinite(seconds) else None,
        "padding_share": table.stats.get("padding_share"),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the few lines the CLI prints."""
    lines = [f"scored {summary['scored']} of {summary['samples']} samples ({summary['truncated']} truncated)"]
    for reason, count in summary["missing"].items():
        lines.append(f"  no score for {count}: {reason}")
    quantiles = summary["ifd_quantiles"]
    if quantiles["p50"] is not None:
        lines.append("IFD quantiles: " + "  ".join(f"{k}={v:.4f}" for k, v in quantiles.items()))
        lines.append(f"IFD >= 1 (prompt does not help): {summary['share_ifd_ge_1']:.1%}")
        if summary["share_ifd_ge_1"] > MOSTLY_UNHELPFUL:
            lines.append(UNHELPFUL_PROMPTS_HINT)
    if summary.get("tokens_per_s"):
        padding = summary.get("padding_share") or 0.0
        lines.append(
            f"{summary['seconds']:.1f} s, {summary['samples_per_s']:.1f} samples/s, "
            f"{summary['tokens_per_s']:.0f} tokens/s, padding {padding:.1%}"
        )
    return "\n".join(lines)


def write_scores(table: ScoreTable, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a score table (``.parquet`` or ``.jsonl``) atomically; floats stay float64."""
    from iterit.storage import write_table

    write_table(path, table.to_rows(), metadata={"stats": table.stats, **(metadata or {})})


def read_scores(path: str | os.PathLike) -> ScoreTable:
    """Read a table written by :func:`write_scores` or ``iterit score``."""
    from iterit.storage import read_table

    rows, metadata = read_table(path)
    missing = {"id", "source", "ifd", "loss_cond", "loss_prior", "n_response_tokens", "truncated", "reason"}
    if rows:
        missing -= set(rows[0])
        if missing:
            raise IterITError(f"{path}: not a score table (no column {', '.join(sorted(missing))}); run 'iterit score'")
    return ScoreTable.from_rows(rows, stats=metadata.get("stats"))


# ---------------------------------------------------------------------------------------------------------
# The resumable command


def _model_identity(model: str) -> dict[str, Any]:
    """The model's name, plus for a local folder the size and time of each weight/config file.

    Hashing the weights would cost as much as reading them; a changed checkpoint changes sizes or times.
    """
    folder = Path(model)
    if not folder.is_dir():
        return {"id": model}
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model") and p.is_file()
    )
    return {
        "id": str(folder.resolve()),
        "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
    }


def _samples_hash(samples: Sequence[Sample]) -> str:
    """SHA-256 of what is scored (ids, sources, conversations), independent of the file's formatting."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps([sample.id, sample.source, sample.messages], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _fingerprint(model: str, samples: Sequence[Sample], settings: dict[str, Any]) -> dict[str, Any]:
    return {"model": _model_identity(model), "data_sha256": _samples_hash(samples), "samples": len(samples), **settings}


def _prepare_shard_folder(folder: Path, fingerprint: dict[str, Any], out: str) -> None:
    """Create the shard folder, or check that the one there was made by a run with the same arguments."""
    marker = folder / "fingerprint.json"
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous != fingerprint:
            differing = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
            raise IterITError(
                f"{folder}: holds partial results of a run with other arguments (differs in: {', '.join(differing)}); "
                f"delete that folder to start over, or choose another --out than {out}"
            )
        return
    from iterit.storage import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, fingerprint)


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.json"


def _write_shard(path: Path, table: ScoreTable) -> None:
    from iterit.storage import write_json

    # JSON keeps float64 exactly (shortest round-trip repr); the file is complete or absent (atomic rename).
    write_json(path, {"rows": table.to_rows(), "stats": table.stats})


def _read_shard(path: Path) -> ScoreTable:
    payload = json.loads(path.read_text(encoding="utf-8"))
    return ScoreTable.from_rows(payload["rows"], stats=payload["stats"])


def _concat_tables(tables: Sequence[ScoreTable]) -> ScoreTable:
    """One table from shards in order; stats add up (seconds are those spent on the shards, resumed or not)."""
    summed = ("seconds", "tokens", "sequences", "samples")
    stats: dict[str, Any] = {key: sum(t.stats.get(key, 0) for t in tables) for key in summed}
    computed = sum(t.stats.get("tokens", 0) / max(1e-12, 1 - t.stats.get("padding_share", 0.0)) for t in tables)
    stats["padding_share"] = 1 - stats["tokens"] / computed if computed else 0.0
    return ScoreTable(
        ids=[i for t in tables for i in t.ids],
        sources=[s for t in tables for s in t.sources],
        ifd=np.concatenate([t.ifd for t in tables]) if tables else np.zeros(0),
        loss_cond=np.concatenate([t.loss_cond for t in tables]) if tables else np.zeros(0),
        loss_prior=np.concatenate([t.loss_prior for t in tables]) if tables else np.zeros(0),
        n_response_tokens=np.concatenate([t.n_response_tokens for t in tables]) if tables else np.zeros(0, np.int64),
        truncated=np.concatenate([t.truncated for t in tables]) if tables else np.zeros(0, bool),
        reasons=[r for t in tables for r in t.reasons],
        stats=stats,
    )


def _pending_shards(folder: Path, n_shards: int, rank: int, world: int) -> list[int]:
    """Shards without a finished file; rank 0 decides and tells the others, so all ranks agree."""
    pending = [k for k in range(n_shards) if not _shard_path(folder, k).exists()] if rank == 0 else None
    if world > 1:
        import torch.distributed as dist

        box = [pending]
        dist.broadcast_object_list(box, src=0)
        pending = box[0]
    return pending


def _validate_command(out: str, ifd_form: str, dtype: str, max_length: int, max_batch_tokens: int, shard_size: int) -> None:
    """All argument problems at once, before loading anything."""
    problems = []
    if Path(out).suffix not in (".parquet", ".jsonl"):
        problems.append(f"--out {out}: use a .parquet or .jsonl file name")
    if ifd_form not in IFD_FORMS:
        problems.append(f"--ifd-form: '{ifd_form}' is not one of {', '.join(IFD_FORMS)}")
    if dtype not in DTYPES:
        problems.append(f"--dtype: '{dtype}' is not one of {', '.join(DTYPES)}")
    for flag, value in (("--max-length", max_length), ("--max-batch-tokens", max_batch_tokens), ("--shard-size", shard_size)):
        if value < 1:
            problems.append(f"{flag}: must be at least 1, got {value}")
    if problems:
        raise IterITError("; ".join(problems))


def score_command(
    model: str,
    data: Sequence[str],
    out: str,
    *,
    template: str = "auto",
    max_length: int = 2048,
    max_batch_tokens: int = 16384,
    ifd_form: str = "ppl-ratio",
    dtype: str = "auto",
    device: str = "auto",
    system_prompt: str | None = None,
    shard_size: int = 1000,
    format: str | None = None,
    columns: dict[str, str] | str | None = None,
    skip_invalid: bool = False,
    dedup: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``iterit score``: score data files with a model into ``out`` (Parquet or JSON Lines), resumably.

    Results go to ``<out>.shards/shard-*.json`` every ``shard_size`` samples, each written atomically, beside a
    ``fingerprint.json`` of the arguments, the data's hash and the model's identity. A killed run restarted
    with the same arguments skips finished shards and writes the same output; other arguments are refused.
    ``max_batch_tokens`` and ``device`` are not in the fingerprint, so a run that ran out of memory can resume
    with a smaller budget. The shard folder is removed once ``out`` is written.

    Under ``torchrun``/``accelerate launch`` every rank runs this; each scores its share and rank 0 writes.
    ``format``, ``columns``, ``system_prompt``, ``skip_invalid`` and ``dedup`` go to
    :func:`iterit.data.load_samples` (the system prompt is added there, to conversations that have none).

    Returns:
        The summary (:func:`summarize_scores`) with ``out`` and ``resumed_shards`` added.
    """
    from iterit.data import load_samples
    from iterit.storage import check_writable

    _validate_command(out, ifd_form, dtype, max_length, max_batch_tokens, shard_size)
    check_writable(out)
    rank, world = init_distributed_from_env()
    samples = load_samples(
        list(data), format=format, columns=columns, system_prompt=system_prompt, skip_invalid=skip_invalid, dedup=dedup
    ).samples
    if not samples:
        raise IterITError(f"--data {' '.join(map(str, data))}: no valid samples to score; see the skipped rows above")
    settings = {
        "template": template,
        "max_length": max_length,
        "ifd_form": ifd_form,
        "dtype": dtype,
        "system_prompt": system_prompt,
        "shard_size": shard_size,
    }
    fingerprint = _fingerprint(model, samples, settings)
    folder = Path(f"{out}.shards")
    if rank == 0:
        _prepare_shard_folder(folder, fingerprint, out)
    _gather(None, world)  # the folder check happens before any rank loads the model
    n_shards = math.ceil(len(samples) / shard_size)
    pending = _pending_shards(folder, n_shards, rank, world)
    if pending:
        loaded, tokenizer = load_model(model, dtype=dtype, device=device)
        logger.info("scoring %d samples in %d shards (%d already done)", len(samples), n_shards, n_shards - len(pending))
        for index in pending:
            chunk = samples[index * shard_size : (index + 1) * shard_size]
            table = score_samples(
                loaded,
                tokenizer,
                chunk,
                template=template,
                max_length=max_length,
                max_batch_tokens=max_batch_tokens,
                ifd_form=ifd_form,
                progress=progress,
            )
            if rank == 0:
                _write_shard(_shard_path(folder, index), table)
    table = _concat_tables([_read_shard(_shard_path(folder, k)) for k in range(n_shards)]) if rank == 0 else None
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = summarize_scores(table)
        write_scores(table, out, metadata={"fingerprint": fingerprint, "summary": summary})
        shutil.rmtree(folder)
    summary = _gather(summary, world)[0]
    return {**summary, "out": str(out), "resumed_shards": n_shards - len(pending)}
