"""Running past one process with ``torch.distributed`` (launched by ``torchrun``).

Pool scoring is what needs many processes: an archive of time-lapse frames scored with 20 MC
passes. Under an initialised process group, :func:`napari_alunet.scoring.score_pool` gives
each rank an interleaved shard of the pool (:func:`shard`); rank 0 gathers the scores (one
float per image, plus the feature vectors of ``diversity="feature"|"badge"``), ranks them with
the same random draws as one process, runs the review pass of the chosen images and sends the
result to every rank. The per-image seeded dropout makes an image's score independent of the
batch it was scored in, so the sharded result equals the single-process one exactly.

Training under a process group is data-parallel (:func:`napari_alunet.training.engine.fit`
wraps the network in ``DistributedDataParallel``): every rank takes its own slice of each global
batch, gradients are averaged, and the kept weights are the same on every rank.

Only rank 0 writes the project (:func:`is_primary`); the other ranks open it read-only and wait
at a :func:`barrier` after each of rank 0's writes, so that every rank reads the same state. The
``alunet train | round | score --nproc N`` commands start ``torchrun --standalone`` themselves;
on several nodes, run ``torchrun --nnodes M --nproc-per-node N --rdzv-backend c10d
--rdzv-endpoint HOST:PORT -m napari_alunet.cli score PROJECT ...`` on each node, with the project
on a shared file system. A multi-node ``round`` is not supported yet: the other ranks follow
rank 0's writes by reading the SQLite database, which is not safe between hosts (README).

This module imports torch.distributed only inside functions: a single process never pays for it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["active", "barrier", "broadcast", "broadcast_tensors", "gather_to_primary",
           "is_primary", "launched_by_torchrun", "mean_over_ranks", "process_group",
           "rank_and_size", "shard"]


def launched_by_torchrun() -> bool:
    """This process is one rank of a ``torchrun`` launch (its environment names the world)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def active() -> bool:
    """A process group with more than one rank is initialised."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_size() -> tuple[int, int]:
    """``(rank, world size)``; ``(0, 1)`` without a process group."""
    if not active():
        return 0, 1
    import torch.distributed as dist

    return dist.get_rank(), dist.get_world_size()


def is_primary() -> bool:
    """Rank 0, or a single process: the one that writes the project and prints."""
    return rank_and_size()[0] == 0


def shard(ids: Sequence[int], rank: int, world_size: int) -> list[int]:
    """Rank ``rank``'s share of ``ids``: every ``world_size``-th id from position ``rank``
    (interleaved, so shards differ in size by one at most and a sorted pool spreads evenly)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return [int(i) for i in list(ids)[rank::world_size]]


def gather_to_primary(value: T) -> list[T] | None:
    """Every rank's ``value`` on rank 0 (in rank order); None on the other ranks."""
    import torch.distributed as dist

    rank, size = rank_and_size()
    gathered: list[Any] | None = [None] * size if rank == 0 else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast(value: T | None) -> T:
    """Rank 0's ``value`` on every rank."""
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def mean_over_ranks(values: Any) -> Any:
    """The element-wise mean of a tensor over the ranks (the tensor itself without a group)."""
    if not active():
        return values
    import torch.distributed as dist

    total = values.clone()
    dist.all_reduce(total)
    return total / dist.get_world_size()


def broadcast_tensors(tensors: Iterable[Any]) -> None:
    """Overwrite the given tensors, in place, with rank 0's (nothing without a group)."""
    if not active():
        return
    import torch.distributed as dist

    for tensor in tensors:
        dist.broadcast(tensor, src=0)


@contextlib.contextmanager
def process_group(device: str | None = None) -> Iterator[tuple[int, int]]:
    """Join the ``torchrun`` launch this process belongs to for the block: backend gloo on the
    CPU, nccl with CUDA (each rank on its local GPU). Yields ``(rank, world size)``; a process
    not started by torchrun gets ``(0, 1)`` and no group."""
    if not launched_by_torchrun():
        yield 0, 1
        return
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available() and device not in ("cpu",)
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # A long timeout: rank 0 alone evaluates and writes while the others wait at a barrier (a
    # large test pool takes minutes); a rank that dies still ends the launch (torchrun).
    dist.init_process_group(backend="nccl" if cuda else "gloo",
                            timeout=datetime.timedelta(hours=2))
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()
