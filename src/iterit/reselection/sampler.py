"""What the ``Trainer`` iterates: every rendered sample as a row, a padding collator, and the selection sampler.

The ``Trainer`` builds its training ``DataLoader`` once and calls ``iter()`` on it at the start of every epoch,
which calls the sampler's ``__iter__`` again: :class:`SelectionSampler` yields the *current* selection (B indices
into the full data set), shuffled with a seed per epoch, and its length (the budget) never changes, so one
learning-rate schedule spans all epochs. Under DDP, accelerate deals batch ``i`` to rank ``i % world_size``;
every rank yields the same seeded order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from iterit.render import IGNORE_INDEX, RenderedSample, labels_for


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

    def __iter__(self) -> Iterator[int]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.indices))
        return iter(self.indices[order].tolist())

    def __len__(self) -> int:
        return len(self.indices)
