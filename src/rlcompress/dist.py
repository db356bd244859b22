"""torchrun / torch.distributed helpers: which rank this is, the process group, reductions.

Under ``torchrun --nproc_per_node N`` every rank runs the same program on the same seeds, so
everything that is not data-parallel (data loading, pruning, clustering, the search) is simply
replicated and comes out identical on every rank. Only training and evaluation divide the work:
each rank takes its slice of every global batch (see :func:`shard`). Only rank 0 writes files
(:mod:`rlcompress.fileio` asks :func:`is_main`), and every write ends with a barrier so a rank
that reads a file right after it was written sees it.

Outside torchrun (no ``WORLD_SIZE`` in the environment) every function is a cheap no-op. The
module depends only on torch, so every layer may use it.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

#: seconds a collective may wait for the other ranks before the job fails with an error
DEFAULT_TIMEOUT_S = 1800


def initialized() -> bool:
    """True when a process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (from the process group, else torchrun's ``RANK`` when its
    ``WORLD_SIZE`` says there are several processes, else 0: a stray ``RANK`` variable alone
    never silences a single process's writes)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    """Number of ranks in the job (1 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its node (torchrun's ``LOCAL_RANK``; picks the GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True on the rank that writes files and prints (rank 0)."""
    return rank() == 0


def init(device: torch.device | str = "cpu") -> bool:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); idempotent.

    Returns True when running with more than one rank. The timeout (``RLCOMPRESS_DIST_TIMEOUT``
    seconds, default 1800) bounds how long a collective waits for a rank that died or hangs,
    so a failure ends the job with an error instead of blocking forever.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            torch.cuda.set_device(local_rank())
        timeout = datetime.timedelta(seconds=float(os.environ.get("RLCOMPRESS_DIST_TIMEOUT",
                                                                  DEFAULT_TIMEOUT_S)))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return initialized()


def barrier() -> None:
    """Wait until every rank reaches this point (no-op with one rank)."""
    if initialized():
        dist.barrier()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks, in float64 (unchanged with one rank)."""
    if not initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def shard(n: int, rank_: int, world: int) -> slice:
    """The contiguous slice of ``n`` items that ``rank_`` of ``world`` takes (sizes differ by at
    most one, earlier ranks take the larger parts, as :func:`torch.tensor_split` does)."""
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return slice(start, start + base + (1 if rank_ < extra else 0))
