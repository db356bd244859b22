"""Device, precision and thread choices shared by training, evaluation and benchmarks."""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import nn


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present (under torchrun the GPU of this rank), else CPU;
    otherwise the named device."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return torch.device(device)


def set_threads(num_threads: int = 0) -> int:
    """Use ``num_threads`` intra-op threads (0: one per available core); returns the count."""
    if num_threads <= 0:
        try:
            num_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_threads = os.cpu_count() or 1
    torch.set_num_threads(num_threads)
    return num_threads


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context: ``bf16`` on CPU (AVX-512 bf16), ``bf16``/``fp16`` AMP on CUDA, or none."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in ("bf16", "fp16", "auto"):
        raise ValueError(f"precision must be fp32, bf16, fp16 or auto, got {precision!r}")
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


@contextlib.contextmanager
def torch_threads(n: int):  # noqa: ANN201 - generator context manager
    """Temporarily use ``n`` intra-op threads (tiny networks run faster on one)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model`` with its 4-D weights in channels_last order (faster convolutions on the CPU), in
    place. A model holding 5-D tensors (Conv3d weights) keeps its layout: torch's ``Module.to``
    refuses to put those in channels_last order."""
    if any(t.dim() == 5 for t in (*model.parameters(), *model.buffers())):
        return model
    return model.to(memory_format=torch.channels_last)
