"""The Trainer callback that re-scores the pool and re-selects at each epoch end, and records what it did.

``on_epoch_end`` comes after the ``Trainer``'s last optimizer step and ``zero_grad`` of the epoch (a shorter
final accumulation when the epoch's batches are not a multiple of ``gradient_accumulation_steps``), so
gradients never cross an epoch boundary. The callback scores the pool with the model as it stands under
:func:`iterit.models.eval_mode`, hands the new selection to the sampler before the next ``iter()``, writes
``epochs/<e>/`` and keeps its state in every checkpoint so a resumed run picks the same samples.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import Trainer, TrainerCallback

from iterit.errors import IterITError
from iterit.models import eval_mode
from iterit.reselection.rule import EpochPick, Reselector, score_rows, selection_dynamics, steps_per_epoch
from iterit.reselection.sampler import SelectionSampler
from iterit.runfolder import RunFolder
from iterit.selection import Selection, manifest_rows
from iterit.storage import write_json

logger = logging.getLogger(__name__)

STATE_FILE = "iterit_reselection.json"


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
        self.run_folder = RunFolder(self.run_dir) if self.run_dir is not None else None
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
        with eval_mode(model):
            return self.reselector.next(epoch, model, self.current)

    def _record_pick(self, pick: EpochPick, previous: EpochPick | None, state) -> None:
        dynamics = selection_dynamics(self.reselector.samples, pick, previous, self.first)
        dynamics.update(score_s=pick.score_s, select_s=pick.select_s,
                        selected_ifd=ifd_quantiles(pick.selection.ifd),
                        pool_ifd=ifd_quantiles(self.reselector.table.ifd[pick.pool]))
        self.history.append(dynamics)
        self._report(dynamics)
        folder = self.run_folder
        if folder is None or not state.is_world_process_zero:
            return
        table = self.reselector.table
        if len(pick.scored):
            folder.write_epoch_table(pick.epoch, "scores", self.table_suffix, score_rows(table, pick.scored),
                                     metadata={"epoch": pick.epoch})
        folder.write_epoch_table(pick.epoch, "selection", self.table_suffix,
                                 manifest_rows(self.reselector.samples, pick.selection),
                                 metadata={"epoch": pick.epoch, **pick.selection.params})
        folder.write_epoch_json(pick.epoch, "dynamics.json", dynamics)

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
        if self.run_folder is not None and state.is_world_process_zero:
            self.run_folder.write_epoch_json(pick.epoch, "metrics.json", metrics)

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
