"""Speed of a pruned ResNet's residual channel map: a gather (``index_select``) against the
0/1 matrix product that ``rlcompress.models.resnet_cifar.pick_channels`` uses.

Usage: python benchmarks/channel_map.py [--model CKPT] [--batch 500] [--threads 0]
Times inference and one training step (forward + backward) of the whole pruned model in
float32 (contiguous) and in bf16 autocast with channels_last, with each implementation, checks
their outputs, and writes results/bench/channel_map.json. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import torch

import rlcompress.models.resnet_cifar as rc
from rlcompress.jobs import resolve_model


def gather_pick(x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """The former implementation: one gather over the channel axis and a 0/1 mask."""
    index = select.argmax(0)
    keep = select.sum(0).reshape(1, -1, 1, 1)
    return x.index_select(1, index) * keep.to(x.dtype)


def _time(model: torch.nn.Module, x: torch.Tensor, bf16: bool, repeats: int) -> tuple:
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        model.eval()
        with torch.no_grad():
            out = model(x).float()
            t0 = time.perf_counter()
            for _ in range(repeats):
                model(x)
            infer = (time.perf_counter() - t0) / repeats
        model.train()
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(x).float().logsumexp(1).mean().backward()
        step = (time.perf_counter() - t0) / repeats
    return out, infer, step


def main() -> None:
    """Time both implementations in both precisions and write the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="checkpoints/fpgm-scratch-resnet20/finetune/best.safetensors",
                    help="a pruned ResNet (its conv2 outputs or shortcuts scatter channels)")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="results/bench/channel_map.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load = [round(v, 2) for v in os.getloadavg()]
    model, _ = resolve_model(args.model, None, 10)
    x = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    new_pick = rc.pick_channels
    for precision in ("fp32", "bf16-channels_last"):
        bf16 = precision != "fp32"
        xin = x.contiguous(memory_format=torch.channels_last) if bf16 else x
        res = {}
        for name, impl in (("gather", gather_pick), ("matmul", new_pick)):
            rc.pick_channels = impl
            net = copy.deepcopy(model)
            if bf16:
                net = net.to(memory_format=torch.channels_last)
            res[name] = _time(net, xin, bf16, args.repeats)
        rc.pick_channels = new_pick
        diff = float((res["gather"][0] - res["matmul"][0]).abs().max())
        rows.append({"precision": precision, "max_abs_logit_diff": diff,
                     "inference_s": {k: round(v[1], 4) for k, v in res.items()},
                     "train_step_s": {k: round(v[2], 4) for k, v in res.items()},
                     "inference_speedup": round(res["gather"][1] / res["matmul"][1], 3),
                     "train_step_speedup": round(res["gather"][2] / res["matmul"][2], 3)})
    report = {"model": args.model, "batch": args.batch, "repeats": args.repeats,
              "threads": torch.get_num_threads(), "rows": rows, "load_average_before": load,
              "command": "python " + " ".join(sys.argv), "torch": torch.__version__}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
