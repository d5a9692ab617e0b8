"""Assembling re-selection: the rule, the first pick, the sampler and the callback, built in one place.

:func:`build_reselection` is the one builder: ``iterit train`` (:mod:`iterit.training`) uses it with
:class:`~iterit.reselection.trainer.IterITTrainer`, and :func:`install_reselection` uses it to drop the same
parts into a user's own ``Trainer`` or TRL's ``SFTTrainer``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from transformers import Trainer

from iterit.data import Sample, as_samples
from iterit.errors import IterITError
from iterit.reselection.callback import ReselectionCallback
from iterit.reselection.rule import STRATEGIES, EpochPick, Reselector, ScoreFn, SelectFn, pool_size_for
from iterit.reselection.sampler import SelectionSampler
from iterit.reselection.scorers import score_with
from iterit.scoring import ScoreTable


@dataclass
class Reselection:
    """The assembled parts: give ``sampler`` to the Trainer and add ``callback`` to its callbacks.

    Attributes:
        reselector: the strategy's rule, holding the latest scores.
        first: the epoch-0 pick. sampler: yields the current pick. callback: re-selects at each epoch end.
        pool_size: u x B after clamping (B for strategies that do not re-score).
    """

    reselector: Reselector
    first: EpochPick
    sampler: SelectionSampler
    callback: ReselectionCallback
    pool_size: int


def build_reselection(
    samples: Sequence[Sample],
    scores: ScoreTable,
    *,
    budget: int,
    score_fn: ScoreFn,
    seed: int,
    select_fn: SelectFn | None = None,
    strategy: str = "iterit",
    pool: str = "greedy",
    update_ratio: float = 3.0,
    select_options: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    table_suffix: str = ".parquet",
    lengths: tuple[np.ndarray, np.ndarray] | None = None,
) -> Reselection:
    """The rule, its epoch-0 pick, the sampler and the callback for ``samples`` scored by ``scores``.

    Why one builder: the pool size, the first pick and the sampler's seed must be derived the same way in
    ``iterit train`` and in a user's Trainer, or the two would pick differently from the same scores.

    Args:
        samples: all candidate samples, in training-row order.
        scores: their scores under the starting model, in any row order (matched by id).
        budget: B, samples per epoch.
        score_fn: ``score_fn(model, samples) -> ScoreTable`` for the re-scorings.
        seed: the sampler's shuffle seed.
        select_fn: defaults to :func:`iterit.selection.select_samples`.
        strategy: a key of :data:`~iterit.reselection.rule.STRATEGIES`.
        pool: ``greedy``, ``reference`` or ``rolling`` (:data:`~iterit.reselection.rule.POOL_HELP`).
        update_ratio: u; the pool holds u x B samples, clamped to what the layout can hold.
        select_options: extra keyword arguments for ``select_fn`` (threshold, decay, seed, tfidf_suffix).
        run_dir: where the callback writes ``epochs/<e>/`` (``None``: in memory only).
        table_suffix: ``.parquet`` or ``.jsonl`` for the per-epoch tables.
        lengths: tokens and response tokens per sample, for the per-epoch token counts.
    """
    if select_fn is None:
        from iterit.selection import select_samples as select_fn
    options = dict(select_options or {})
    pool_size = (pool_size_for(pool, update_ratio, budget, scores, options.get("threshold", 1.0))
                 if STRATEGIES[strategy].rescore else budget)
    reselector = Reselector(samples, scores, budget, strategy, pool, pool_size, score_fn, select_fn, options)
    first = reselector.first()
    sampler = SelectionSampler(first.selection.indices, seed=seed)
    callback = ReselectionCallback(reselector, sampler, first, run_dir=run_dir, table_suffix=table_suffix,
                                   lengths=lengths)
    return Reselection(reselector, first, sampler, callback, pool_size)


def install_reselection(
    trainer: Trainer,
    samples: Sequence[Sample] | Any,
    *,
    budget: int,
    score_fn: ScoreFn,
    select_fn: SelectFn | None = None,
    strategy: str = "iterit",
    pool: str = "greedy",
    update_ratio: float = 3.0,
    scores: ScoreTable | None = None,
    select_options: dict[str, Any] | None = None,
    run_dir: str | Path | None = None,
    seed: int | None = None,
    columns: dict[str, str] | str | None = None,
) -> ReselectionCallback:
    """Make an existing ``Trainer`` (or TRL ``SFTTrainer``) train on a re-selected subset each epoch.

    The trainer's ``train_dataset`` must hold ``samples`` in the same order (row ``i`` is ``samples[i]``);
    the sampler only picks rows. Scores the samples with ``trainer.model`` when ``scores`` is not given,
    selects the first B, installs the sampler on this trainer instance and adds the callback. With
    ``report_to`` set, each epoch's selection dynamics go to those integrations (:func:`tracking_scalars`).

    Args:
        trainer: the trainer, built but not yet trained.
        samples: all candidate samples, in ``train_dataset`` order; or the ``datasets.Dataset`` the trainer
            was given (e.g. TRL's ``messages`` or ``prompt``/``completion`` rows).
        budget: B, samples per epoch.
        score_fn: ``score_fn(model, samples) -> ScoreTable``, e.g. ``scorer_for(tokenizer, max_length=...)``.
        select_fn: defaults to :func:`iterit.selection.select_samples`.
        strategy: a key of :data:`STRATEGIES`.
        pool: ``greedy`` (the top u x B of the epoch-0 ranking), ``reference`` (the reference code's window)
            or ``rolling``; see :data:`iterit.reselection.rule.POOL_HELP`.
        update_ratio: u; the pool holds u x B samples (clamped to the valid samples).
        scores: scores of ``samples`` under the starting model, if already computed; any row order (matched
            by id with :meth:`ScoreTable.aligned_to`).
        select_options: extra keyword arguments for ``select_fn`` (threshold, decay, seed).
        run_dir: write ``epochs/<e>/`` artefacts there.
        seed: shuffle seed of the sampler (defaults to ``trainer.args.seed``).
        columns: when ``samples`` is a ``datasets.Dataset``: our field name -> its column, as ``--columns``.

    Returns:
        The callback (its ``history`` holds the per-epoch dynamics and timings).
    """
    samples = as_samples(samples, columns)
    check_rows_line_up(trainer, len(samples))
    if scores is None:
        scores = score_with(trainer.model, score_fn, samples)
    scores = scores.aligned_to([sample.id for sample in samples], flag="install_reselection(scores=...)")
    built = build_reselection(
        samples, scores, budget=budget, score_fn=score_fn, select_fn=select_fn, strategy=strategy, pool=pool,
        update_ratio=update_ratio, select_options=select_options, run_dir=run_dir,
        seed=trainer.args.seed if seed is None else seed,
    )
    sampler = built.sampler
    # An instance attribute shadows the method: the Trainer's get_train_dataloader looks it up on self.
    trainer._get_train_sampler = lambda *args, **kwargs: sampler
    trainer.add_callback(built.callback)
    built.callback.attach(trainer)
    return built.callback


def check_rows_line_up(trainer: Trainer, n_samples: int) -> None:
    """Refuse trainers whose training rows are not the samples, one each, in order.

    TRL's ``SFTTrainer`` keeps its rows in order by default; ``packing`` and ``shuffle_dataset`` change that,
    and its preparation drops rows whose labels are all masked after truncation to ``max_length``.
    """
    args = trainer.args
    if getattr(args, "packing", False):
        raise IterITError(
            "SFTConfig(packing=True) concatenates rows into max_length blocks, so a training row is no longer one "
            "sample and re-selection cannot pick samples; set packing=False"
        )
    if getattr(args, "shuffle_dataset", False):
        raise IterITError(
            "SFTConfig(shuffle_dataset=True) reorders the rows before training, so row i is no longer samples[i]; "
            "leave it False: the selection sampler shuffles each epoch's picks with the trainer's seed"
        )
    dataset = trainer.train_dataset
    rows = len(dataset) if hasattr(dataset, "__len__") else None
    if rows != n_samples:
        size = "no" if dataset is None else "an unsized" if rows is None else rows
        hint = ""
        if rows is not None and rows < n_samples and hasattr(args, "packing"):
            hint = (" (SFTTrainer drops rows whose labels are all masked after truncation to max_length="
                    f"{args.max_length}: raise max_length, or drop those samples from both first)")
        raise IterITError(f"the trainer's train_dataset has {size} rows for {n_samples} samples{hint}; "
                          "row i must be samples[i] (the sampler picks rows by position)")
