"""Coupled channel-group pruning on the example networks: how much of each network shrinks.

Usage: python benchmarks/groups.py [--rate 0.4]

For ResNet-18 (projection shortcuts), MobileNetV2 (depthwise convs, identity adds) and a small
DenseNet (concatenations), all at their full widths with random weights and randomised
batch-norm statistics: convs physically shrunk, parameters and FLOPs before and after (against
the (1 - rate)^2 a chain of equally pruned layers would keep), the largest output difference
from the masked network over the groups, and what the earlier per-layer shrinker
(``shrink_generic``: one conv at a time, only where its output reaches a single conv) managed
on the same network. Writes results/bench/groups.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from rlcompress.models.zoo import DenseNetTiny, MobileNetV2, ResNet18, randomise_batchnorm
from rlcompress.pruning import FilterMasks, PruneConfig, shrink_generic
from rlcompress.pruning.groups import GroupPruneConfig, prune_groups

ROOT = Path(__file__).resolve().parents[1]
NETS = {"resnet18": lambda: ResNet18(), "mobilenetv2": lambda: MobileNetV2(),
        "densenet_tiny": lambda: DenseNetTiny()}


def measure(name: str, rate: float) -> dict:
    """Prune one network both ways and report."""
    torch.manual_seed(0)
    net = NETS[name]().eval()
    randomise_batchnorm(net)
    x = torch.randn(2, 3, 32, 32)
    t0 = time.perf_counter()
    small, rep = prune_groups(net, x, GroupPruneConfig(rate=rate))
    seconds = time.perf_counter() - t0
    net_copy = NETS[name]().eval()
    net_copy.load_state_dict(net.state_dict())
    masks = FilterMasks.compute(net_copy, PruneConfig(rate=rate))
    masks.apply(net_copy)
    _, old = shrink_generic(net_copy, masks, x)
    pruned = [g for g in rep.groups if g.status == "pruned"]
    return {
        "model": name, "rate": rate, "convs": rep.convs, "convs_shrunk": rep.convs_shrunk,
        "groups": len(rep.groups), "groups_pruned": len(pruned), "kept_whole": rep.kept_whole,
        "params_before": rep.params_before, "params_after": rep.params_after,
        "params_kept": round(rep.params_after / rep.params_before, 4),
        "flops_before": rep.flops_before, "flops_after": rep.flops_after,
        "flops_kept": round(rep.flops_after / rep.flops_before, 4),
        "chain_rule_kept": round((1 - rate) ** 2, 4),
        "max_abs_diff": max((g.max_abs_diff for g in pruned), default=0.0),
        "seconds": round(seconds, 1),
        "per_layer_shrinker_convs_shrunk": sum(1 for k in old.kept if k not in old.kept_whole),
        "per_layer_shrinker_kept_whole": len(old.kept_whole),
        "groups_detail": [g.__dict__ for g in rep.groups],
    }


def main(argv: list[str] | None = None) -> dict:
    """Measure every example network and write results/bench/groups.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "groups.json"))
    args = ap.parse_args(argv)
    rows = []
    for name in NETS:
        rows.append(measure(name, args.rate))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "groups_detail"}))
    result = {"command": "python benchmarks/groups.py " + " ".join(argv or sys.argv[1:]),
              "torch": torch.__version__, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
