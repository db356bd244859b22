"""Data-parallel training speed: one process against several under torchrun, same global batch.

Usage: python benchmarks/ddp.py [--model resnet20] [--steps 40] [--configs 1x2 2x1 1x1]

Each config ``PxT`` runs ``torchrun --nproc_per_node P`` with T intra-op threads per process and
trains ``--steps`` steps per epoch (global batch 128, bf16, channels_last) on a fixed subset of
the CIFAR-10 train split for 2 epochs; the second epoch's images/s is the figure (the first
includes start-up). The validation numbers of every config are compared with the first config's
(the runs must agree). Writes results/bench/ddp.json. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def worker(model: str, steps: int, threads: int, out: str) -> None:
    """One rank's part: load data, train 2 epochs on a subset with the package's fit()."""
    from rlcompress.data import DataConfig, load_data
    from rlcompress.engine import TrainConfig, fit
    from rlcompress.models import build_model, model_spec

    data = load_data(DataConfig(), progress=False)
    data.train = data.train.subset(128 * steps, seed=0)
    data.val = data.val.subset(1000, seed=0)
    torch.manual_seed(0)
    spec = model_spec(model)
    cfg = TrainConfig(epochs=2, batch_size=128, lr=0.02, threads=threads, progress=False,
                      precision="bf16", channels_last=True)
    fit(build_model(spec), spec, data, cfg, out)


def run_config(model: str, steps: int, procs: int, threads: int) -> dict:
    """Launch one config under torchrun; its metrics and wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), __file__, "--worker", "--model", model,
               "--steps", str(steps), "--threads", str(threads), "--out", f"{tmp}/run"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        with open(f"{tmp}/run/metrics.csv") as f:
            rows = list(csv.DictReader(f))
    return {"procs": procs, "threads_per_proc": threads, "wall_s": round(wall, 1),
            "train_img_per_s": float(rows[-1]["img_per_s"]),
            "epoch_s": float(rows[-1]["seconds"]),
            "val_loss": [float(r["val_loss"]) for r in rows],
            "val_top1": [float(r["val_top1"]) for r in rows]}


def main(argv: list[str] | None = None) -> dict:
    """Run every config and write results/bench/ddp.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--configs", nargs="+", default=["1x2", "2x1", "1x1"])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--results", default=str(ROOT / "results" / "bench" / "ddp.json"))
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.model, args.steps, args.threads, args.out)
        return {}
    rows = []
    for c in args.configs:
        procs, threads = (int(v) for v in c.split("x"))
        rows.append(run_config(args.model, args.steps, procs, threads))
        print(json.dumps(rows[-1]))
    ref = rows[0]
    for r in rows:
        r["speedup_vs_first"] = round(r["train_img_per_s"] / ref["train_img_per_s"], 2)
        r["max_val_loss_diff_vs_first"] = round(max(
            abs(a - b) for a, b in zip(r["val_loss"], ref["val_loss"], strict=True)), 5)
    result = {
        "model": args.model, "global_batch": 128, "steps_per_epoch": args.steps,
        "precision": "bf16", "channels_last": True, "backend": "gloo (CPU)",
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "torch": torch.__version__,
        "command": "python benchmarks/ddp.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rows": rows,
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.results}")
    return result


if __name__ == "__main__":
    main()
