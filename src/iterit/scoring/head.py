"""The model split into backbone and output head, so the head runs only where a response token is predicted.

Per token, the vocabulary projection is the largest single cost of scoring a real LLM (hidden x vocabulary
multiply-adds, and a float32 row of vocabulary logits). Applying it only at the positions that predict
response tokens, a few rows at a time, saves the prompt's share of that work and bounds its memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iterit.scoring.batches import WorkItem

logger = logging.getLogger(__name__)

# Rows of vocabulary logits computed at once: 64 MiB of float32 per chunk bounds the head's memory.
HEAD_CHUNK_BYTES = 64 * 1024 * 1024
# Largest per-token loss difference between the head-only path and the model's own logits that we accept
# as "same head" when checking an unknown architecture (float32 / half precision).
HEAD_CHECK_TOLERANCE = {"float32": 1e-3, "half": 5e-2}


@dataclass
class ScoringModel:
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


def unwrap_model(model: Any) -> Any:
    """The transformers causal LM inside DDP / DataParallel / peft wrappers."""
    import torch

    while isinstance(model, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        model = model.module
    if hasattr(model, "get_base_model"):  # peft's PeftModel: LoRA layers stay injected in the base model
        model = model.get_base_model()
    return model


def split_model(model: Any) -> ScoringModel:
    """Split a causal LM into backbone (hidden states) and head (vocabulary projection).

    ``base_model`` is transformers' generic accessor for the backbone of any ``*ForCausalLM``; the head is
    ``get_output_embeddings()``. Logit transforms that sit between them in known architectures are applied
    here (Gemma's final soft-capping, Cohere's ``logit_scale``, Granite's ``logits_scaling``); anything else
    is caught by :func:`head_matches_model` and falls back to the model's own (full) logits.
    """
    inner = unwrap_model(model)
    backbone = getattr(inner, "base_model", None)
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if backbone is inner or not callable(backbone):
        backbone = None
    if head is not None and getattr(head, "weight", None) is None:  # e.g. a quantised head: use full logits
        head = None
    config = text_config(getattr(inner, "config", None))
    softcap = getattr(config, "final_logit_softcapping", None) or None
    multiplier = float(getattr(config, "logit_scale", None) or 1.0)
    scaling = getattr(config, "logits_scaling", None)
    if scaling:
        multiplier /= float(scaling)
    embeddings = inner.get_input_embeddings()
    return ScoringModel(inner, backbone, head, softcap, multiplier, embeddings.weight.device)


def text_config(config: Any) -> Any:
    """The language model's config (multimodal models nest it as ``text_config``)."""
    if config is not None and hasattr(config, "get_text_config"):
        return config.get_text_config()
    return config


def _batch_tensors(sequences: Sequence[WorkItem], device: Any, pad_id: int) -> tuple[Any, Any]:
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


def _target_index(sequences: Sequence[WorkItem]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every response token: its row, the position predicting it (token position - 1), its id."""
    rows, cols, targets = [], [], []
    for row, seq in enumerate(sequences):
        start, end = seq.span
        rows.append(np.full(end - start, row, dtype=np.int64))
        cols.append(np.arange(start - 1, end - 1, dtype=np.int64))
        targets.append(np.asarray(seq.ids[start:end], dtype=np.int64))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(targets)


def _chunked_cross_entropy(parts: ScoringModel, hidden: Any, targets: Any) -> Any:
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


def _transform_logits(parts: ScoringModel, logits: Any) -> Any:
    """Apply what the architecture applies between the head and its returned logits."""
    import torch

    if parts.logit_multiplier != 1.0:
        logits = logits * parts.logit_multiplier
    if parts.softcap:
        logits = torch.tanh(logits / parts.softcap) * parts.softcap
    return logits


def token_losses(parts: ScoringModel, sequences: Sequence[WorkItem], pad_id: int, head_only: bool) -> Any:
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


def mean_per_sequence(token_losses: Any, sequences: Sequence[WorkItem]) -> list[float]:
    """Mean loss of each sequence's response tokens (float64 accumulation)."""
    values = token_losses.double().numpy()
    bounds = np.cumsum([0] + [seq.span[1] - seq.span[0] for seq in sequences])
    return [float(values[bounds[k] : bounds[k + 1]].mean()) for k in range(len(sequences))]


def head_matches_model(parts: ScoringModel, probe: WorkItem, pad_id: int) -> bool:
    """Whether backbone + head (+ known transforms) reproduce the model's own logits on one short sequence.

    This protects architectures with extra logit transforms we do not know of: they fall back to full logits.
    """
    import torch

    fast = token_losses(parts, [probe], pad_id, head_only=True)
    full = token_losses(parts, [probe], pad_id, head_only=False)
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
