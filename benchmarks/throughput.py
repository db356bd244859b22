"""Training and inference throughput (images/s) of the CIFAR ResNets on this machine.

Usage: python benchmarks/throughput.py [--models resnet20 resnet32] [--steps 20]
Writes results/bench/throughput.json. Run it on an otherwise idle machine: other heavy
processes sharing the cores lower every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rlcompress.engine import autocast, set_threads
from rlcompress.models import build_model

MODES = {
    "fp32": dict(precision="fp32", channels_last=False, compile=False),
    "bf16_channels_last": dict(precision="bf16", channels_last=True, compile=False),
    "fp32_compile": dict(precision="fp32", channels_last=False, compile=True),
}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _prepare(name: str, mode: dict, train: bool):
    torch.manual_seed(0)
    model = build_model(name)
    fmt = torch.channels_last if mode["channels_last"] else torch.contiguous_format
    model = model.to(memory_format=fmt).train(train)
    runner = torch.compile(model) if mode["compile"] else model
    return model, runner, fmt


def bench_train(name: str, mode: dict, batch: int, steps: int, warmup: int) -> float:
    model, runner, fmt = _prepare(name, mode, train=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    dev = torch.device("cpu")

    def step():
        with autocast(dev, mode["precision"]):
            loss = F.cross_entropy(runner(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t0)


@torch.inference_mode()
def bench_infer(name: str, mode: dict, batch: int, steps: int, warmup: int) -> float:
    _, runner, fmt = _prepare(name, mode, train=False)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    dev = torch.device("cpu")
    for _ in range(warmup):
        with autocast(dev, mode["precision"]):
            runner(x)
    t0 = time.perf_counter()
    for _ in range(steps):
        with autocast(dev, mode["precision"]):
            runner(x)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    """Measure every (model, mode) pair and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet32"])
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    ap.add_argument("--train-batch", type=int, default=128)
    ap.add_argument("--infer-batch", type=int, default=512)
    ap.add_argument("--out", default="results/bench/throughput.json")
    args = ap.parse_args()
    threads = set_threads(0)
    rows = []
    for name in args.models:
        for mode_name in args.modes:
            mode = MODES[mode_name]
            tr = bench_train(name, mode, args.train_batch, args.steps, args.warmup)
            inf = bench_infer(name, mode, args.infer_batch, args.steps, args.warmup)
            rows.append({"model": name, "mode": mode_name, "train_img_s": round(tr, 1),
                         "infer_img_s": round(inf, 1)})
            print(f"{name:9s} {mode_name:20s} train {tr:7.1f} img/s   infer {inf:7.1f} img/s",
                  flush=True)
    report = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "threads": threads,
                    "torch": torch.__version__, "python": platform.python_version()},
        "settings": {"train_batch": args.train_batch, "infer_batch": args.infer_batch,
                     "steps": args.steps, "warmup": args.warmup},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
