"""Data-parallel training under torchrun: DistributedDataParallel plus batch norm over the
global batch, so N ranks train the same model one process would.

Each rank sees its slice of every global batch (the loaders shard it). Two things keep the N-rank
run equal to the one-process run up to float rounding:

* the loss of each rank is weighted by its share of the global batch, so DDP's gradient average
  is the gradient of the global batch's mean loss even when a last batch splits unevenly;
* batch norm normalises with the statistics of the global batch, not the rank's slice.

torch's own ``SyncBatchNorm`` refuses CPU tensors (gloo) and its statistics kernels exist only
for GPUs, so :func:`sync_batchnorm` provides the same computation for any device on top of the
fused inference kernels: one all-reduce per layer forward and one backward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as tdist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from rlcompress import dist


def _local_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel mean and biased variance of this rank's batch (float32), and its count."""
    c = x.shape[1]
    n = x.numel() // max(c, 1)
    if n == 0:  # this rank's share of a batch smaller than the number of ranks
        zero = torch.zeros(c, dtype=torch.float32, device=x.device)
        return zero, zero.clone(), 0
    mean, var = torch.batch_norm_update_stats(x.float(), None, None, 0.0)
    return mean, var, n


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode batch norm over the global batch, with torch's fused CPU/GPU kernels.

    Forward: one all-reduce of each rank's (count x mean, count x (var + mean^2), count) gives the
    global mean and variance; the fused inference kernel normalises with them. Backward: the
    fused inference backward gives ``dy * w * invstd`` and the local sums of ``dy`` and
    ``dy * xhat``; one all-reduce of those sums gives the two global terms batch norm's
    gradient subtracts (what torch's SyncBatchNorm computes, which runs only on GPUs).
    """

    @staticmethod
    def forward(ctx: object, x: torch.Tensor, weight: torch.Tensor | None,  # noqa: D102
                bias: torch.Tensor | None, bn: _BatchNorm) -> torch.Tensor:
        c = x.shape[1]
        mean_l, var_l, n_l = _local_moments(x)
        stats = torch.cat([mean_l * n_l, (var_l + mean_l**2) * n_l,
                           torch.full((1,), float(n_l), device=x.device)]).double()
        tdist.all_reduce(stats)
        n = float(stats[-1])
        mean = (stats[:c] / n).float()
        var = (stats[c:2 * c] / n - (stats[:c] / n) ** 2).clamp(min=0).float()
        if bn.track_running_stats and bn.running_mean is not None:
            bn.num_batches_tracked.add_(1)
            m = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - m).add_(m * mean.to(bn.running_mean.dtype))
            unbiased = var * (n / max(n - 1, 1))
            bn.running_var.mul_(1 - m).add_(m * unbiased.to(bn.running_var.dtype))
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps, ctx.n = bn.eps, n
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, bn.eps)

    @staticmethod
    def backward(ctx: object, gy: torch.Tensor) -> tuple:  # noqa: D102
        x, weight, mean, var = ctx.saved_tensors
        c = x.shape[1]
        w = weight if weight is not None else torch.ones_like(mean)
        if x.numel():
            gx, gw, gb = torch.ops.aten.native_batch_norm_backward(
                gy, x, w, mean, var, None, None, False, ctx.eps, [True, True, True])
        else:
            gx, gw, gb = torch.zeros_like(x), torch.zeros_like(mean), torch.zeros_like(mean)
        sums = torch.cat([gb.float(), gw.float()])
        tdist.all_reduce(sums)
        invstd = torch.rsqrt(var + ctx.eps)
        mean_dy, mean_dy_xhat = sums[:c] / ctx.n, sums[c:] / ctx.n
        shape = [1, -1] + [1] * (x.dim() - 2)
        slope = (w * invstd * invstd * mean_dy_xhat).view(shape).to(gx.dtype)
        offset = (w * invstd * (mean_dy - invstd * mean * mean_dy_xhat)).view(shape).to(gx.dtype)
        gx = gx - x * slope - offset
        return (gx, gw if weight is not None else None,
                gb if weight is not None else None, None)


def _sync_forward(self: _BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if self.training and dist.initialized():
        return _GlobalBatchNorm.apply(x, self.weight, self.bias, self)
    return type(self).__mro__[1].forward(self, x)


_SYNC_CLASSES: dict[type, type] = {}


def _sync_class(cls: type) -> type:
    if cls not in _SYNC_CLASSES:
        _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (cls,), {"forward": _sync_forward})
    return _SYNC_CLASSES[cls]


@contextlib.contextmanager
def sync_batchnorm(model: nn.Module) -> Iterator[nn.Module]:
    """Make every batch-norm layer of ``model`` use global-batch statistics while inside.

    The layers keep their identity, parameters and state-dict keys (their class is swapped for
    a subclass and restored on exit), so hooks and references held elsewhere stay valid.
    """
    swapped = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    originals = [type(m) for m in swapped]
    for m, cls in zip(swapped, originals, strict=True):
        m.__class__ = _sync_class(cls)
    try:
        yield model
    finally:
        for m, cls in zip(swapped, originals, strict=True):
            m.__class__ = cls


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel (parameters broadcast from rank 0), or unchanged
    with one rank. Buffers are not re-broadcast each step: global batch norm keeps them equal."""
    if not dist.initialized():
        return model
    ids = [device.index if device.index is not None else dist.local_rank()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def local_weight(n_local: int, n_global: int | None = None) -> float:
    """Factor for this rank's mean loss so that DDP's gradient average equals the gradient of
    the global batch's mean loss: ``n_local * world / n_global`` (1 with one rank). The sharded
    loaders say ``n_global``; without it, it is summed over the ranks (one more collective)."""
    if not dist.initialized():
        return 1.0
    if n_global is None:
        n = torch.tensor([float(n_local)], dtype=torch.float64)
        tdist.all_reduce(n)
        n_global = int(n.item())
    return n_local * dist.world_size() / max(n_global, 1)
