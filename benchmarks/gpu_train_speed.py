"""Training throughput on a GPU with batches made on the CPU vs on the GPU (BatchLoader's
``device``): the step of ResNet-20/32 from scratch, the same batches either way.

Usage (on the ``device`` machine): python benchmarks/gpu_train_speed.py [--steps 150]
Writes ``results/bench/gpu_train_speed.json`` (or ``--out``): images per second per model,
batch size and loader placement, and the loader alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rlcompress.data import BatchLoader, DataConfig, load_data
from rlcompress.engine import autocast
from rlcompress.fileio import write_json
from rlcompress.models import build_model, model_spec


def _timed(loader: BatchLoader, steps: int, step_fn) -> float:  # noqa: ANN001
    """Images per second over ``steps`` batches after 10 warm-up batches."""
    it = iter(loader)
    for _ in range(10):
        step_fn(*next(it))
    torch.cuda.synchronize()
    t, n = time.perf_counter(), 0
    for _ in range(steps):
        x, y = next(it)
        step_fn(x, y)
        n += len(y)
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def measure(data, model: str, batch: int, on_gpu: bool, steps: int) -> dict:  # noqa: ANN001
    """One row: the full training step, and the loader alone, for one configuration."""
    dev = torch.device("cuda")
    net = build_model(model_spec(model)).to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = BatchLoader(data.train, batch, data.mean, data.std, shuffle=True, augment=True,
                         drop_last=True, cutout=16, device=dev if on_gpu else None)

    def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        with autocast(dev, "bf16"):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def load_only(x: torch.Tensor, y: torch.Tensor) -> None:
        x.to(dev, non_blocking=True)

    return {"model": model, "batch_size": batch, "batches_on": "gpu" if on_gpu else "cpu",
            "train_img_per_s": round(_timed(loader, steps, train_step)),
            "loader_img_per_s": round(_timed(loader, steps, load_only))}


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure every configuration and write the results file."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (as each baseline run)")
    ap.add_argument("--out", default="results/bench/gpu_train_speed.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark measures GPU training")
    torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    data = load_data(DataConfig(), progress=False)
    rows = []
    for model in ("resnet20", "resnet32"):
        for batch in (128, 256):
            for on_gpu in (False, True):
                rows.append(measure(data, model, batch, on_gpu, args.steps))
                print(json.dumps(rows[-1]), flush=True)
    write_json(Path(args.out), {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cpu_threads": args.threads, "machine": platform.machine(), "steps": args.steps,
        "rows": rows,
    })
    return rows


if __name__ == "__main__":
    main()
