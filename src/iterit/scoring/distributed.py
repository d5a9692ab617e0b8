"""Rank and world size under torchrun / accelerate launch, and the one gather the scorer needs."""

from __future__ import annotations

import atexit
import os
from typing import Any

_CLOSE_REGISTERED = False


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
    close_distributed_at_exit()
    return distributed_rank_world()


def close_distributed_at_exit() -> None:
    """Have :func:`close_distributed` run at interpreter exit if a process group is up (once per process)."""
    import torch.distributed as dist

    global _CLOSE_REGISTERED
    if not _CLOSE_REGISTERED and dist.is_available() and dist.is_initialized():
        atexit.register(close_distributed)
        _CLOSE_REGISTERED = True


def close_distributed() -> None:
    """Destroy the default process group, if one is up, while the interpreter is still whole.

    A process that exits with a live gloo group lets the interpreter tear down tensors that gloo's worker
    threads still hold: at random, depending on thread timing, the process then aborts with SIGABRT
    ("terminate called without an active exception") although its work is done. Destroying the group
    first is the shutdown PyTorch documents. Local to this process (no collective), so it cannot hang
    when a peer has already failed; a no-op when no group is up.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def gather_objects(obj: Any, world: int) -> list[Any]:
    """Every rank's ``obj``, in rank order (one collective call)."""
    if world == 1:
        return [obj]
    import torch.distributed as dist

    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered
