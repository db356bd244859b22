"""Parameter counts, FLOPs and CPU latency of a model."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (weights, biases, batch-norm scales and shifts)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """FLOPs of one forward pass (torch.utils.flop_counter: a multiply-add counts as 2)."""
    was = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(torch.zeros(input_shape))
    model.train(was)
    return int(counter.get_total_flops())


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    batch: int,
    input_shape: tuple[int, int, int] = (3, 32, 32),
    repeats: int = 20,
    warmup: int = 3,
    channels_last: bool = True,
) -> float:
    """Median wall time in ms of one fp32 CPU forward pass on a batch of ``batch`` images."""
    was = model.training
    model.eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    x = torch.randn(batch, *input_shape).contiguous(memory_format=fmt)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    model.train(was)
    return 1000.0 * sorted(times)[len(times) // 2]
