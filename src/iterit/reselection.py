"""Re-selection inside the Hugging Face ``Trainer``: a sampler, a callback and a one-line install.

The ``Trainer`` builds its training ``DataLoader`` once and calls ``iter()`` on it at the start of every
epoch, which calls the sampler's ``__iter__`` again. So re-selection needs no copy of the training loop:

* :class:`SelectionSampler` yields the *current* selection (B indices into the full data set), shuffled
  with a seed per epoch; its length is the budget B and never changes, so the ``Trainer`` sizes one
  learning-rate schedule for all epochs from it.
* :class:`ReselectionCallback` re-scores the candidate pool with the model as it stands at the end of each
  epoch (eval mode, no gradients) and hands the new selection to the sampler before the next ``iter()``.
* the ``Trainer`` is told to use the sampler by the smallest override of its private
  ``_get_train_sampler`` (:class:`IterITTrainer`, or :func:`install_reselection` on any existing trainer,
  including TRL's ``SFTTrainer``). transformers changed that method's signature in 2025 (it gained an
  optional dataset argument), so the override accepts anything.

Under DDP, accelerate wraps the sampler's batches in a ``BatchSamplerShard`` that deals batch ``i`` to rank
``i % world_size``; every rank therefore has to yield the same order, which the seeded shuffle guarantees,
and every rank runs the same (collective) scoring and the same deterministic selection.

Gradients never cross an epoch boundary: the ``Trainer`` forces an optimizer step and ``zero_grad`` on the
last batch of every epoch (a shorter final accumulation when the epoch's batches are not a multiple of
``gradient_accumulation_steps``), and ``on_epoch_end``, where the re-scoring runs, comes after it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from iterit.data import Sample, as_samples
from iterit.errors import IterITError
from iterit.render import IGNORE_INDEX, RenderedSample, labels_for
from iterit.rescoring import (
    STRATEGIES,
    EpochPick,
    Reselector,
    ScoreFn,
    SelectFn,
    pool_size_for,
    score_rows,
    score_with,
    scorer_for,
    selection_dynamics,
    steps_per_epoch,
)
from iterit.scoring import ScoreTable
from iterit.selection import Selection, manifest_rows
from iterit.storage import write_json, write_table

logger = logging.getLogger(__name__)

__all__ = [
    "STATE_FILE", "STRATEGIES", "IterITTrainer", "PaddingCollator", "ReselectionCallback", "ResponseOnlyDataset",
    "SelectionSampler", "check_rows_line_up", "install_reselection", "scorer_for", "tracking_scalars",
]

STATE_FILE = "iterit_reselection.json"


# ---------------------------------------------------------------- data


class ResponseOnlyDataset(torch.utils.data.Dataset):
    """Every rendered sample as ``input_ids`` + ``labels`` (-100 outside the response: ``render.labels_for``).

    It holds the whole data set, not a subset: the sampler picks which rows an epoch sees, so the
    indices of a selection, a score table and this data set are the same numbers.
    """

    def __init__(self, rendered: Sequence[RenderedSample]):
        self.rendered = list(rendered)

    def __len__(self) -> int:
        return len(self.rendered)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        item = self.rendered[index]
        return {"input_ids": list(item.input_ids), "labels": labels_for(item)}


@dataclass
class PaddingCollator:
    """Right-pads a batch; padded positions get attention 0 and label -100 (no loss)."""

    pad_token_id: int

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(feature["input_ids"]) for feature in features)
        input_ids = torch.full((len(features), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        for row, feature in enumerate(features):
            length = len(feature["input_ids"])
            input_ids[row, :length] = torch.tensor(feature["input_ids"])
            labels[row, :length] = torch.tensor(feature["labels"])
            attention[row, :length] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


class SelectionSampler(torch.utils.data.Sampler[int]):
    """Yields the current selection, shuffled with ``(seed, epoch)``; its length is the budget, always.

    Args:
        indices: the first selection (positions in the full data set).
        seed: shuffle seed; the order of epoch ``e`` depends on ``(seed, e)`` only, so every DDP rank
            yields the same order and a resumed run replays the same batches.
    """

    def __init__(self, indices: Sequence[int], *, seed: int = 0):
        self.indices = np.asarray(indices, dtype=np.int64)
        self.seed = seed
        self.epoch = 0

    def set_selection(self, indices: Sequence[int]) -> None:
        """Replace the selection; the length must stay the budget the LR schedule was sized with."""
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) != len(self.indices):
            raise ValueError(f"a selection of {len(indices)} samples for a budget of {len(self.indices)}")
        self.indices = indices

    def set_epoch(self, epoch: int) -> None:
        """Called by the ``Trainer`` (through accelerate) before each epoch's ``iter()``."""
        self.epoch = epoch

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
        return iter(self.indices[order].tolist())

    def __len__(self) -> int:
        return len(self.indices)


# ---------------------------------------------------------------- the callback


class ReselectionCallback(TrainerCallback):
    """Re-scores and re-selects at each epoch end; records per-epoch artefacts; guards against NaN.

    At ``on_epoch_end`` of epoch ``e`` (after the Trainer's last optimizer step and ``zero_grad`` of that
    epoch, before it saves the epoch's checkpoint), when another epoch follows, it scores the pool with
    the model in eval mode without gradients, restores train mode, and sets the sampler's selection for
    ``e + 1``. ``on_save`` writes its state into the checkpoint folder *last*, which marks the checkpoint
    complete; ``on_train_begin`` of a resumed run reads it back, so the resumed epoch sees the selection the
    uninterrupted run would have used.

    Args:
        reselector: the strategy's rule.
        sampler: the sampler the Trainer iterates.
        first: the epoch-0 pick (from ``reselector.first()``).
        run_dir: where ``epochs/<e>/`` artefacts go (rank 0 only); ``None`` keeps them in memory only.
        table_suffix: ``.parquet`` or ``.jsonl`` for the per-epoch tables.
        lengths: tokens per sample and response tokens per sample, for the per-epoch token counts.
    """

    def __init__(self, reselector: Reselector, sampler: SelectionSampler, first: EpochPick, *,
                 run_dir: str | Path | None = None, table_suffix: str = ".parquet",
                 lengths: tuple[np.ndarray, np.ndarray] | None = None):
        self.reselector = reselector
        self.sampler = sampler
        self.first = first
        self.current = first
        self.previous: EpochPick | None = None
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.table_suffix = table_suffix
        self.lengths = lengths
        self.history: list[dict[str, Any]] = []
        self.selections: dict[int, list[int]] = {first.epoch: first.selection.indices.tolist()}
        self._losses: list[float] = []
        self._epoch_started = 0.0
        self._steps_at_begin = 0
        self._recorded_first = False
        self._restored = False
        self._trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> None:
        """Report each epoch's selection dynamics through ``trainer``'s ``report_to`` integrations."""
        self._trainer = trainer

    # --- events

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step > 0 and not self._restored:
            # A resumed run: its checkpoint is the Trainer's default folder for that step.
            self._restore_from(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        if state.global_step > 0:
            self._catch_up(state, model)
        self._check_schedule(args, state)
        if not self._recorded_first and self.current.epoch == 0:
            self._record_pick(self.current, None, state)
            self._recorded_first = True

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._epoch_started = time.perf_counter()
        self._steps_at_begin = state.global_step
        self._losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self._losses.append(float(logs["loss"]))

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        # fp16 uses a loss scaler that skips steps with inf gradients by design.
        if args.fp16 or model is None:
            return
        if not _gradients_finite(model):
            raise IterITError(
                f"training loss became non-finite at step {state.global_step + 1} (epoch {self.current.epoch}); "
                f"stopped before the optimizer step, the last good checkpoint is in '{args.output_dir}'; "
                "lower --learning-rate, use --bf16 instead of --fp16, or check the data"
            )

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        train_s = time.perf_counter() - self._epoch_started
        finished = self.current
        self._record_metrics(finished, state, train_s)
        next_epoch = finished.epoch + 1
        if next_epoch >= math.ceil(state.num_train_epochs) or control.should_training_stop:
            return
        self._advance(self._pick_next(next_epoch, model), state)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                write_json(folder / STATE_FILE, self.state_dict())

    def _check_schedule(self, args, state) -> None:
        """Stop when the Trainer sized the LR schedule for fewer steps than the epochs will take.

        transformers before the 2025 loop rewrite computed ``batches // accumulation`` steps per epoch (a floor)
        but still stepped on an epoch's short last accumulation, so training stopped early, mid-epoch.
        """
        if args.dataloader_drop_last or args.max_steps > 0:
            return
        per_epoch = steps_per_epoch(len(self.sampler), args.per_device_train_batch_size, args.world_size,
                                    args.gradient_accumulation_steps)
        expected = per_epoch * math.ceil(args.num_train_epochs)
        if state.max_steps < expected:
            raise IterITError(
                f"this transformers version plans {state.max_steps} optimizer steps for {expected} "
                f"({per_epoch} per epoch: the last accumulation of an epoch is short); upgrade transformers, or "
                "choose a budget whose batches per epoch divide by --gradient-accumulation-steps"
            )

    def _catch_up(self, state, model: Any) -> None:
        """Re-select now when the checkpoint was saved after an epoch's last step but before its end.

        With ``save_strategy="steps"`` a save can fall on the last step of an epoch, before ``on_epoch_end``
        re-selected; the resumed Trainer then starts the next epoch without calling it. The model loaded
        from that checkpoint is the one the uninterrupted run re-scored with, so the picks are the same.
        """
        finished = int(math.floor((state.epoch or 0.0) + 1e-6))
        if self.current.epoch < finished < math.ceil(state.num_train_epochs):
            logger.info("the checkpoint ends epoch %d before its re-selection; re-selecting now", finished - 1)
            self._advance(self._pick_next(finished, model), state)

    # --- the work

    def _advance(self, pick: EpochPick, state) -> None:
        """Make ``pick`` the selection the sampler yields from the next ``iter()`` on, and record it."""
        self.previous, self.current = self.current, pick
        self.selections[pick.epoch] = pick.selection.indices.tolist()
        self.sampler.set_selection(pick.selection.indices)
        self._record_pick(pick, self.previous, state)

    def _pick_next(self, epoch: int, model: Any) -> EpochPick:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return self.reselector.next(epoch, model, self.current)
        finally:
            model.train(was_training)

    def _epoch_dir(self, epoch: int) -> Path | None:
        return None if self.run_dir is None else self.run_dir / "epochs" / str(epoch)

    def _record_pick(self, pick: EpochPick, previous: EpochPick | None, state) -> None:
        dynamics = selection_dynamics(self.reselector.samples, pick, previous, self.first)
        dynamics.update(score_s=pick.score_s, select_s=pick.select_s,
                        selected_ifd=ifd_quantiles(pick.selection.ifd),
                        pool_ifd=ifd_quantiles(self.reselector.table.ifd[pick.pool]))
        self.history.append(dynamics)
        self._report(dynamics)
        folder = self._epoch_dir(pick.epoch)
        if folder is None or not state.is_world_process_zero:
            return
        table = self.reselector.table
        if len(pick.scored):
            write_table(folder / f"scores{self.table_suffix}", score_rows(table, pick.scored),
                        metadata={"epoch": pick.epoch})
        write_table(folder / f"selection{self.table_suffix}",
                    manifest_rows(self.reselector.samples, pick.selection),
                    metadata={"epoch": pick.epoch, **pick.selection.params})
        write_json(folder / "dynamics.json", dynamics)

    def _report(self, dynamics: dict[str, Any]) -> None:
        """Send :func:`tracking_scalars` to the Trainer's integrations (tensorboard, wandb, mlflow, ...).

        Through the base ``Trainer.log``: TRL's ``SFTTrainer.log`` would flush (and so split) its running
        token-accuracy averages into this record. Nothing is logged with ``report_to="none"``, so the
        console's progress callbacks do not print these records either.
        """
        trainer = self._trainer
        if trainer is None or not trainer.args.report_to or trainer.args.report_to == ["none"]:
            return
        Trainer.log(trainer, tracking_scalars(dynamics))

    def _record_metrics(self, pick: EpochPick, state, train_s: float) -> None:
        indices = pick.selection.indices
        metrics = {
            "epoch": pick.epoch,
            "mean_train_loss": float(np.mean(self._losses)) if self._losses else None,
            "losses": list(self._losses),
            "steps": state.global_step - self._steps_at_begin,
            "global_step": state.global_step,
            "train_s": train_s,
            "score_s": pick.score_s,
            "select_s": pick.select_s,
        }
        if self.lengths is not None:
            metrics["tokens"] = int(self.lengths[0][indices].sum())
            metrics["response_tokens"] = int(self.lengths[1][indices].sum())
        for entry in self.history:
            if entry["epoch"] == pick.epoch:
                entry.update(train_s=train_s, mean_train_loss=metrics["mean_train_loss"])
        folder = self._epoch_dir(pick.epoch)
        if folder is not None and state.is_world_process_zero:
            write_json(folder / "metrics.json", metrics)

    # --- resume

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: current/previous picks, the fixed pool, the latest scores."""
        table = self.reselector.table
        return {
            "current": _pick_state(self.current),
            "previous": _pick_state(self.previous) if self.previous else None,
            "first": _pick_state(self.first),
            "frozen_pool": None if self.reselector.frozen_pool_ is None else self.reselector.frozen_pool_.tolist(),
            "latest": {
                "ifd": table.ifd.tolist(),
                "loss_cond": table.loss_cond.tolist(),
                "loss_prior": table.loss_prior.tolist(),
            },
            "history": self.history,
            "selections": {str(epoch): picks for epoch, picks in self.selections.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and point the sampler at the resumed epoch's selection."""
        table = self.reselector.table
        self.reselector.table = replace(
            table,
            ifd=np.asarray(state["latest"]["ifd"], dtype=np.float64),
            loss_cond=np.asarray(state["latest"]["loss_cond"], dtype=np.float64),
            loss_prior=np.asarray(state["latest"]["loss_prior"], dtype=np.float64),
        )
        if state["frozen_pool"] is not None:
            self.reselector.frozen_pool_ = np.asarray(state["frozen_pool"], dtype=np.int64)
        self.first = _pick_from_state(state["first"])
        self.current = _pick_from_state(state["current"])
        self.previous = _pick_from_state(state["previous"]) if state["previous"] else None
        self.history = list(state["history"])
        self.selections = {int(epoch): picks for epoch, picks in state["selections"].items()}
        self._recorded_first = self._restored = True
        self.sampler.set_selection(self.current.selection.indices)

    def _restore_from(self, checkpoint: Path) -> None:
        path = checkpoint / STATE_FILE
        if not path.exists():
            raise IterITError(
                f"{checkpoint}: resuming needs '{STATE_FILE}' in the checkpoint, which is missing "
                "(the run was killed while saving it?); resume from the previous checkpoint"
            )
        self.load_state_dict(json.loads(path.read_text()))


QUANTILES = (10, 25, 50, 75, 90)


def ifd_quantiles(ifd: np.ndarray) -> dict[str, float] | None:
    """``{"p10": ..., "p90": ...}`` of the finite IFDs (``None`` when there are none)."""
    finite = ifd[np.isfinite(ifd)]
    if not len(finite):
        return None
    return {f"p{q}": float(value) for q, value in zip(QUANTILES, np.percentile(finite, QUANTILES))}


def tracking_scalars(dynamics: dict[str, Any]) -> dict[str, float]:
    """One epoch's dynamics as flat ``iterit/...`` scalars, as experiment trackers plot them.

    ``iterit/selection_epoch`` says which epoch's selection the values describe (logged at the step where it
    was chosen: step 0 for epoch 0, the last step of epoch ``e - 1`` for epoch ``e``).
    """
    scalars = {"iterit/selection_epoch": float(dynamics["epoch"]),
               "iterit/share_not_in_epoch0_top": float(dynamics["share_not_in_epoch0_top"])}
    if dynamics["overlap_with_previous"] is not None:
        scalars["iterit/overlap_with_previous"] = float(dynamics["overlap_with_previous"])
    for group in ("selected_ifd", "pool_ifd"):
        for name, value in (dynamics.get(group) or {}).items():
            scalars[f"iterit/{group}_{name}"] = value
    for source, share in dynamics["source_mix"].items():
        scalars[f"iterit/source_share/{source}"] = float(share)
    return scalars


def _pick_state(pick: EpochPick) -> dict[str, Any]:
    selection = pick.selection
    return {
        "epoch": pick.epoch,
        "indices": selection.indices.tolist(),
        "ifd": selection.ifd.tolist(),
        "diversity": selection.diversity.tolist(),
        "score": selection.score.tolist(),
        "params": selection.params,
        "pool": pick.pool.tolist(),
        "scored": pick.scored.tolist(),
        "score_s": pick.score_s,
        "select_s": pick.select_s,
        "qualified": pick.qualified,
    }


def _pick_from_state(state: dict[str, Any]) -> EpochPick:
    selection = Selection(
        indices=np.asarray(state["indices"], dtype=np.int64),
        ifd=np.asarray(state["ifd"], dtype=np.float64),
        diversity=np.asarray(state["diversity"], dtype=np.float64),
        score=np.asarray(state["score"], dtype=np.float64),
        params=state["params"],
    )
    return EpochPick(state["epoch"], selection, np.asarray(state["pool"], dtype=np.int64),
                     np.asarray(state["scored"], dtype=np.int64), state["score_s"], state["select_s"],
                     state.get("qualified"))


def _gradients_finite(model: torch.nn.Module) -> bool:
    # Sharded (FSDP2) gradients are DTensors: check this rank's shard.
    grads = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
             for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    norms = torch._foreach_norm(grads)
    return bool(torch.isfinite(torch.stack([n.float() for n in norms]).sum()).item())


# ---------------------------------------------------------------- installing it in a Trainer


LOSS_WEIGHTINGS = ("token", "sample")


def per_sample_response_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's mean cross-entropy over its labelled (response) tokens, and whether it has any.

    Labels are aligned with the inputs (HF convention): position ``t`` predicts ``labels[t + 1]``. Computed in
    float32, as the models' own loss is.
    """
    targets = labels[:, 1:]
    token_loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets,
                                                   ignore_index=IGNORE_INDEX, reduction="none")
    mask = targets != IGNORE_INDEX
    counts = mask.sum(dim=1)
    return (token_loss * mask).sum(dim=1) / counts.clamp(min=1), counts > 0


class IterITTrainer(Trainer):
    """A ``Trainer`` whose training sampler is a :class:`SelectionSampler`, with an optional per-sample loss.

    ``loss_weighting="token"`` keeps the model's own loss: transformers >= 5 averages it over every response
    token of the accumulated batch, so a long response weighs more than a short one. ``"sample"`` gives every
    sample the same weight whatever the batch shape: the optimizer step's loss is the mean, over the samples of
    the accumulated batch, of each response's mean token loss (what the reference gets from batch 1 with
    accumulation 32 on transformers 4). Under DDP each rank averages its own samples and DDP averages the
    ranks, which is the same when ranks hold as many samples (accelerate evens out the last batch).

    Args:
        selection_sampler: the sampler to iterate; pass the callback in ``callbacks=[...]`` as usual.
        loss_weighting: ``token`` (the default) or ``sample``.
    """

    def __init__(self, *args: Any, selection_sampler: SelectionSampler, loss_weighting: str = "token", **kwargs: Any):
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise IterITError(f"--loss-weighting {loss_weighting!r}: not one of {', '.join(LOSS_WEIGHTINGS)}")
        super().__init__(*args, **kwargs)
        self.selection_sampler = selection_sampler
        for callback in self.callback_handler.callbacks:
            if isinstance(callback, ReselectionCallback):
                callback.attach(self)
        self.loss_weighting = loss_weighting
        self._samples_in_step = 1
        if loss_weighting == "sample":
            self.loss_is_scaled_for_ga = True  # compute_loss divides by the samples of the whole step

    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> SelectionSampler:
        # transformers >= 4.53 passes the dataset; older versions pass nothing.
        return self.selection_sampler

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any) -> tuple[list, Any]:
        """The Trainer's micro-batches for one optimizer step; also counts their samples with a response."""
        batches, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.loss_weighting == "sample":
            self._samples_in_step = max(1, sum(int((b["labels"] != IGNORE_INDEX).any(dim=1).sum()) for b in batches))
        return batches, num_items

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if self.loss_weighting == "token":
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        losses, _ = per_sample_response_loss(outputs.logits, inputs["labels"])
        loss = losses.sum() / self._samples_in_step
        return (loss, outputs) if return_outputs else loss


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
            or ``rolling``; see :data:`iterit.rescoring.POOL_HELP`.
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
    if select_fn is None:
        from iterit.selection import select_samples as select_fn
    samples = as_samples(samples, columns)
    check_rows_line_up(trainer, len(samples))
    if scores is None:
        scores = score_with(trainer.model, score_fn, samples)
    scores = scores.aligned_to([sample.id for sample in samples], flag="install_reselection(scores=...)")
    threshold = (select_options or {}).get("threshold", 1.0)
    pool_size = (pool_size_for(pool, update_ratio, budget, scores, threshold)
                 if STRATEGIES[strategy].rescore else budget)
    reselector = Reselector(
        samples, scores, budget, strategy, pool, pool_size,
        score_fn, select_fn, dict(select_options or {}),
    )
    first = reselector.first()
    sampler = SelectionSampler(first.selection.indices, seed=trainer.args.seed if seed is None else seed)
    # An instance attribute shadows the method: the Trainer's get_train_dataloader looks it up on self.
    trainer._get_train_sampler = lambda *args, **kwargs: sampler
    callback = ReselectionCallback(reselector, sampler, first, run_dir=run_dir)
    trainer.add_callback(callback)
    callback.attach(trainer)
    return callback


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
