"""The re-selection rule of each strategy, apart from any trainer: score tables in, B picks per epoch out.

Epoch 0 picks B samples from every scored sample. Before each later epoch a re-scoring strategy scores a
candidate pool of u x B samples with the model as it stands and picks B again from it; the other strategies
keep their picks. :class:`Reselector` holds that rule and the latest known score of every sample;
:mod:`iterit.reselection.callback` calls it from inside the Hugging Face ``Trainer``. Nothing here imports
torch or transformers: the rule runs on any list of samples and any ``score_fn``.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iterit.data import Sample
from iterit.errors import IterITError
from iterit.scoring import ScoreTable
from iterit.selection import Selection

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Strategy:
    """How a training strategy selects: which selection rule, and whether it re-scores between epochs."""

    select: str
    rescore: bool


STRATEGIES: dict[str, Strategy] = {
    "iterit": Strategy("iterit", rescore=True),
    "ifd-iterative": Strategy("ifd", rescore=True),
    "static": Strategy("iterit", rescore=False),
    "ifd": Strategy("ifd", rescore=False),
    "random": Strategy("random", rescore=False),
    "longest": Strategy("longest", rescore=False),
    "full": Strategy("full", rescore=False),
}

POOLS = ("reference", "greedy", "rolling")
POOL_HELP = (
    "which u x B samples are re-scored after each epoch. greedy (default, as the paper describes it and every "
    "place goes to a candidate): the top u x B of the epoch-0 IFD x diversity greedy, fixed after epoch 0: the "
    "paper's wording, the 'top-ranked samples'. reference: "
    "positions [0, u x B) of the reference code's epoch-0 window [the B picks | every IFD >= threshold sample | "
    "the other candidates by IFD alone], fixed after epoch 0: what JiaQiSJTU/IterIT runs. rolling: the top "
    "u x B re-ranked from the latest scores before each re-scoring. (frozen: the old name of greedy)"
)

ScoreFn = Callable[[Any, Sequence[Sample]], ScoreTable]
SelectFn = Callable[..., Selection]

def resolve_pool(pool: str) -> str:
    """The pool layout's current name: ``frozen`` (renamed ``greedy``) still works, with a warning."""
    if pool == "frozen":
        warnings.warn("--pool frozen is now --pool greedy (the same layout: the top u x B of the epoch-0 greedy); "
                      "it is not the reference code's pool, which is --pool reference", FutureWarning, stacklevel=2)
        return "greedy"
    if pool not in POOLS:
        raise IterITError(f"--pool {pool!r}: not one of {', '.join(POOLS)}; see `iterit train --help`")
    return pool


# ---------------------------------------------------------------- score tables


def take_rows(table: ScoreTable, rows: np.ndarray) -> ScoreTable:
    """The rows ``rows`` of ``table``, in that order."""
    return table.take(rows)


def put_rows(table: ScoreTable, rows: np.ndarray, update: ScoreTable) -> ScoreTable:
    """A copy of ``table`` whose rows ``rows`` are replaced by ``update`` (same samples, same order).

    Raises:
        ValueError: ``update``'s ids are not those of ``rows``: a score would land on another sample.
    """
    rows = np.asarray(rows, dtype=np.int64)
    expected = [table.ids[i] for i in rows]
    if list(update.ids) != expected:
        raise ValueError(f"put_rows: the update's ids {list(update.ids)[:3]}... are not those of the rows "
                         f"{expected[:3]}...; align it with ScoreTable.aligned_to first")
    merged = table.take(np.arange(len(table.ids)))
    for column in ("ifd", "loss_cond", "loss_prior", "n_response_tokens", "truncated"):
        getattr(merged, column)[rows] = getattr(update, column)
    for position, row in enumerate(rows):
        merged.reasons[row] = update.reasons[position]
    return merged


def score_rows(table: ScoreTable, rows: np.ndarray) -> list[dict[str, Any]]:
    """Rows of a score table as records, in the columns ``iterit score`` writes (NaN as null)."""
    return take_rows(table, rows).to_rows()


# ---------------------------------------------------------------- the re-selection rule


@dataclass
class EpochPick:
    """What one epoch trains on, and how it was found.

    Attributes:
        epoch: the epoch this selection is trained in (0 = chosen with the base model).
        selection: B picks, indices into the full data set.
        pool: the candidate pool the picks came from (all valid samples in epoch 0).
        scored: the indices scored for this epoch (all samples in epoch 0, the pool later, none for
            strategies that do not re-score).
        score_s: seconds spent scoring; select_s: seconds spent selecting.
        qualified: pool samples the rule could pick after re-scoring (None where nothing was re-scored).
    """

    epoch: int
    selection: Selection
    pool: np.ndarray
    scored: np.ndarray
    score_s: float = 0.0
    select_s: float = 0.0
    qualified: int | None = None


@dataclass
class Reselector:
    """The strategy's rule for choosing B samples each epoch, independent of any trainer.

    ``table`` holds the latest known score of every sample: the base model's, overwritten by each
    re-scoring of the pool. Three pool layouts (:data:`POOL_HELP`):

    * ``greedy``: fixed after epoch 0, the first u x B of the strategy's own ranking (greedy IFD x diversity
      for ``iterit``, IFD for ``ifd-iterative``), whose head is the first selection: "the top u x B by the
      selection score", as the paper words it;
    * ``reference``: fixed after epoch 0, the first u x B of the reference code's window (see
      :func:`reference_window`), which puts every IFD >= threshold sample right after the B picks;
    * ``rolling``: the strategy's ranking of ``table``, recomputed before each re-scoring.

    Args:
        samples: all samples, in data-set order.
        table: their scores (one row per sample).
        budget: B, samples per epoch.
        strategy: a key of :data:`STRATEGIES`.
        pool: ``reference``, ``greedy`` or ``rolling`` (``frozen``: the old name of ``greedy``).
        pool_size: u x B, already clamped (:func:`pool_size_for`).
        score_fn: ``score_fn(model, samples) -> ScoreTable``; the model is in eval mode, without grads.
        select_fn: :func:`iterit.selection.select_samples` (or anything with its signature).
        select_options: passed to ``select_fn`` (threshold, decay, seed).
    """

    samples: Sequence[Sample]
    table: ScoreTable
    budget: int
    strategy: str
    pool: str
    pool_size: int
    score_fn: ScoreFn
    select_fn: SelectFn
    select_options: dict[str, Any] = field(default_factory=dict)
    frozen_pool_: np.ndarray | None = None

    def __post_init__(self) -> None:
        # The API boundary: a table in any row order is matched to the samples by id, once.
        self.table = self.table.aligned_to([sample.id for sample in self.samples], flag="scores")
        self.pool = resolve_pool(self.pool)

    @property
    def rescores(self) -> bool:
        return STRATEGIES[self.strategy].rescore

    def _select(self, budget: int, candidates: np.ndarray | None = None) -> Selection:
        rule = STRATEGIES[self.strategy].select
        return self.select_fn(
            self.samples, self.table, budget, strategy=rule, candidates=candidates, **self.select_options
        )

    def first(self) -> EpochPick:
        """Epoch 0: B picks from every sample, and (for re-scoring strategies) the pool fixed after epoch 0."""
        started = time.perf_counter()
        selection = self._select(self.budget)
        if self.rescores and self.pool == "greedy":
            self.frozen_pool_ = self._select(self.pool_size).indices.copy()
        if self.rescores and self.pool == "reference":
            window = reference_window(self.table, selection.indices, self._threshold())
            self.frozen_pool_ = window[: self.pool_size].copy()
        everything = np.arange(len(self.samples))
        return EpochPick(0, selection, everything, everything, select_s=time.perf_counter() - started)

    def next(self, epoch: int, model: Any, previous: EpochPick) -> EpochPick:
        """Epoch ``epoch`` >= 1: re-score the pool with ``model`` and pick B from it (or keep the picks)."""
        if not self.rescores:
            return EpochPick(epoch, previous.selection, previous.pool, np.zeros(0, dtype=np.int64))
        started = time.perf_counter()
        pool = self._current_pool()
        ranked_s = time.perf_counter() - started
        started = time.perf_counter()
        fresh = self.score_fn(model, [self.samples[i] for i in pool])
        fresh = fresh.aligned_to([self.samples[i].id for i in pool], flag="score_fn's table")
        self.table = put_rows(self.table, pool, fresh)
        score_s = time.perf_counter() - started
        started = time.perf_counter()
        qualified = self._qualified(pool)
        selection = self._select(self.budget, candidates=pool) if qualified else _no_selection()
        if len(selection.indices) < self.budget:
            selection = self._top_up(selection, previous.selection, pool)
        select_s = time.perf_counter() - started + ranked_s
        return EpochPick(epoch, selection, pool, pool, score_s=score_s, select_s=select_s, qualified=qualified)

    def _qualified(self, pool: np.ndarray) -> int:
        """Pool samples the rule may pick: scored, and under the threshold when it ranks by IFD.

        Zero is possible (every fresh IFD >= 1, or no score): the epoch is then topped up rather than
        stopped, since the run has already paid for the epoch that led here.
        """
        ifd = self.table.ifd[pool]
        return int((np.isfinite(ifd) & (ifd < self._threshold())).sum())

    def _threshold(self) -> float:
        """The IFD a candidate must stay below: the threshold for rules that rank by IFD, else none."""
        ranks_by_ifd = STRATEGIES[self.strategy].select in ("iterit", "ifd")
        return self.select_options.get("threshold", 1.0) if ranks_by_ifd else math.inf

    def _top_up(self, selection: Selection, previous: Selection, pool: np.ndarray) -> Selection:
        """Fill a short selection up to B, so the sampler's length (and the LR schedule) holds.

        After re-scoring, pool samples can cross the IFD threshold (or fail to score), leaving fewer than B
        candidates; the rest comes from the previous epoch's picks, then the pool, in rank order.
        """
        chosen = selection.indices.tolist()
        taken = set(chosen)
        for index in [*previous.indices.tolist(), *pool.tolist()]:
            if len(chosen) == self.budget:
                break
            if index not in taken:
                chosen.append(index)
                taken.add(index)
        added = len(chosen) - len(selection.indices)
        logger.warning("only %d of the %d-sample pool qualified after re-scoring; topped up with %d earlier picks",
                       len(selection.indices), len(pool), added)
        fill = np.asarray(chosen[len(selection.indices):], dtype=np.int64)
        nan = np.full(added, np.nan)
        return Selection(
            np.asarray(chosen, dtype=np.int64), np.r_[selection.ifd, self.table.ifd[fill]],
            np.r_[selection.diversity, nan], np.r_[selection.score, nan],
            params={**selection.params, "topped_up": added}, summary=selection.summary,
        )

    def _current_pool(self) -> np.ndarray:
        if self.pool == "rolling":
            return self._select(self.pool_size).indices.copy()
        return self.frozen_pool_


def reference_window(table: ScoreTable, picks: np.ndarray, threshold: float) -> np.ndarray:
    """The reference code's epoch-0 arrangement of the data, whose first u x B positions it re-scores.

    ``SupervisedDataset.update`` (JiaQiSJTU/IterIT, ``src/data_utils.py``) lays the samples out as
    ``[the B picks | every sample with IFD >= threshold, in data order | the other candidates by IFD alone,
    highest first]``; the trainer then re-scores positions ``[0, u x B)`` every later epoch. So when more
    than (u - 1) x B samples have IFD >= 1, the pool holds no fresh candidate at all. Unscorable samples
    (no IFD) are in no position: the reference drops them from the data (NaN compares false both ways);
    iterit keeps them, never picked, and does not spend pool places re-scoring what cannot be scored.
    """
    ifd = table.ifd
    scored = np.isfinite(ifd)
    picked = np.zeros(len(ifd), dtype=bool)
    picked[picks] = True
    unhelpful = np.flatnonzero(scored & (ifd >= threshold))
    rest = np.flatnonzero(scored & (ifd < threshold) & ~picked)
    rest = rest[np.lexsort((rest, -ifd[rest]))]  # by IFD, highest first; ties in data order
    return np.concatenate([np.asarray(picks, dtype=np.int64), unhelpful, rest]).astype(np.int64)


def _no_selection() -> Selection:
    empty = np.zeros(0)
    return Selection(np.zeros(0, dtype=np.int64), empty, empty, empty, params={}, summary={"n_candidates": 0})


def selection_dynamics(samples: Sequence[Sample], pick: EpochPick, previous: EpochPick | None,
                       first: EpochPick) -> dict[str, Any]:
    """Overlap with the previous epoch, how many picks (and what share) the epoch-0 top-B did not hold, the
    per-source mix, and how many pool samples qualified after re-scoring and how many picks were topped up."""
    chosen = set(pick.selection.indices.tolist())
    budget = len(chosen)
    overlap = len(chosen & set(previous.selection.indices.tolist())) / budget if previous else None
    outside_first = chosen - set(first.selection.indices.tolist())
    new_vs_first = len(outside_first) / budget
    mix = Counter(samples[i].source for i in chosen)
    return {
        "epoch": pick.epoch,
        "budget": budget,
        "pool_size": int(len(pick.pool)),
        "scored": int(len(pick.scored)),
        "overlap_with_previous": overlap,
        "share_not_in_epoch0_top": new_vs_first,
        "not_in_epoch0_top": len(outside_first),
        "source_mix": {source: mix[source] / budget for source in sorted(mix)},
        "source_counts": dict(sorted(mix.items())),
        "qualified": pick.qualified,
        "topped_up": int(pick.selection.params.get("topped_up", 0)),
    }


# ---------------------------------------------------------------- pool size


def valid_count(table: ScoreTable, threshold: float = math.inf) -> int:
    """Samples a selection may pick: scored, with an IFD below ``threshold`` (selection's candidate rule)."""
    from iterit.selection import candidate_mask

    return int(candidate_mask(table, threshold).sum())


def clamp_pool_size(update_ratio: float, budget: int, table: ScoreTable, threshold: float = math.inf) -> int:
    """u x B, clamped to the number of valid samples (and said so)."""
    wanted = int(math.ceil(update_ratio * budget))
    available = valid_count(table, threshold)
    if wanted > available:
        logger.warning("--update-ratio %g x budget %d = %d exceeds the %d valid samples; the pool is all %d",
                       update_ratio, budget, wanted, available, available)
        return available
    return max(wanted, budget)


def pool_size_for(pool: str, update_ratio: float, budget: int, table: ScoreTable, threshold: float) -> int:
    """u x B clamped to what the layout can hold: the candidates, or every scored sample for ``reference``
    (its window includes the IFD >= threshold samples)."""
    return clamp_pool_size(update_ratio, budget, table, math.inf if resolve_pool(pool) == "reference" else threshold)


def steps_per_epoch(budget: int, per_device_batch_size: int, world_size: int, accumulation: int) -> int:
    """Optimizer steps per epoch as the Trainer computes them for a sampler of length ``budget``.

    accelerate deals whole batches to ranks (``ceil(batches / world)`` per rank, padding the last round),
    and the Trainer makes a shorter final accumulation step when the epoch's batches are not a multiple of
    ``accumulation``: ``ceil(ceil(B / (batch x world)) / accumulation)``.
    """
    batches_per_rank = math.ceil(math.ceil(budget / per_device_batch_size) / world_size)
    return max(1, math.ceil(batches_per_rank / accumulation))
