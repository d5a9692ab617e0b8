"""Work items and batches: two texts per sample, sorted by length and packed under a token budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from iterit.render import RenderedSample


@dataclass(slots=True)
class WorkItem:
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


def collect_work_items(rendered: Sequence[RenderedSample]) -> tuple[list[WorkItem], list[str | None]]:
    """Two work items per scorable sample; the reason for each sample that has none."""
    sequences: list[WorkItem] = []
    reasons: list[str | None] = []
    for index, item in enumerate(rendered):
        reason = item.reason or _span_problem(item)
        reasons.append(reason)
        if reason is None:
            sequences.append(WorkItem(index, False, item.input_ids, tuple(item.span)))
            sequences.append(WorkItem(index, True, item.prior_ids, tuple(item.prior_span)))
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
