"""Data-parallel training with ``torch.distributed`` (DDP).

Launch with torchrun, one process per GPU (or a few CPU processes)::

    torchrun --nproc_per_node 4 -m femurseg train DATA_DIR -o RUN_DIR [--config FILE] [--resume]

(the one training command, ``femurseg train``, under torchrun): :func:`femurseg.training.fit` notices torchrun's
``RANK``/``WORLD_SIZE`` on its own.  Every rank builds its
share of the SAME global batch (patch ``i`` depends only on the seed and ``i``), gradients are averaged, and the
soft Dice is computed per sample, so K processes with batch B/K each train exactly as one process with batch B
(up to floating-point summation order).  Rank 0 prepares the data cache, validates, logs and saves.
Backend: "nccl" on CUDA, "gloo" otherwise.  Batch normalisation would break the equivalence (statistics per rank);
the V-Net's default has none.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group described by torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``/``MASTER_PORT``), if any; a single process otherwise.

    Parameters
    ----------
    device_type : {"cuda", "cpu", "mps"}
        "nccl" is used on CUDA, "gloo" otherwise.
    """
    world = _env_int("WORLD_SIZE", 1)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0),
                        _env_int("LOCAL_WORLD_SIZE", dist.get_world_size()), False)
    if world <= 1:
        return DistInfo()
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, _env_int("LOCAL_WORLD_SIZE", world), True)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info.enabled:
        dist.barrier()


def mean_over_ranks(values: Sequence[float], info: DistInfo, device: torch.device) -> list[float]:
    """The mean of each value over the ranks (the values themselves when not distributed)."""
    if not info.enabled:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / info.world_size).tolist()


def cleanup(info: DistInfo) -> None:
    """Leave the process group if this module joined it."""
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
