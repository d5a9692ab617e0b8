"""A ``Trainer`` whose training sampler is the selection sampler, with an optional per-sample loss.

The ``Trainer`` has no public sampler hook, so :class:`IterITTrainer` overrides the private
``_get_train_sampler`` in the smallest way: transformers changed its signature in 2025 (it gained an
optional dataset argument), so the override accepts anything.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer

from iterit.errors import IterITError
from iterit.render import IGNORE_INDEX
from iterit.reselection.callback import ReselectionCallback
from iterit.reselection.sampler import SelectionSampler

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
