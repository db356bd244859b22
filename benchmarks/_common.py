"""Helpers shared by the reward benchmarks (``reward_study.py``, ``short_ft_rank.py``).

Loaded by path like the scripts (``sys.path`` gets this folder), so it is not part of the
installed package: these are measurement recipes, not library features.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from rlcompress.cli import add_config_args, config_from_args
from rlcompress.clustering import ShareConfig, freeze_qat
from rlcompress.clustering.quantize import quantize
from rlcompress.data import DataConfig
from rlcompress.engine import TrainConfig, calibration_batches, recalibrate_bn, short_finetune
from rlcompress.jobs.frontier import model_digest, point_records
from rlcompress.jobs.prune import prune_model
from rlcompress.pruning import PruneConfig
from rlcompress.search.evaluator import PolicyEvaluator


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def after_short_ft(net: torch.nn.Module, teacher: torch.nn.Module, ks: dict[str, int],
                   data: object, steps: int, cfg: TrainConfig, ev: PolicyEvaluator,
                   share_cfg: ShareConfig | None = None) -> float:
    """Top-1 on ``ev``'s subset after ``steps`` steps of distilled trained quantization of a
    copy of ``net`` at ``ks`` (batch norm re-estimated as the sharing default does)."""
    net = copy.deepcopy(net)
    share_cfg = share_cfg or ShareConfig()
    quantize(net, ks, data, share_cfg, trainable=True)
    short_finetune(net, data, cfg, steps, teacher)
    freeze_qat(net)
    recalibrate_bn(net, calibration_batches(data, share_cfg.bn_images, seed=1))
    return ev.top1_of(net.float().to(memory_format=torch.contiguous_format))


def policy_key(point: dict) -> str:
    """A frontier point's searched policy (k and rates) as comparable text: two points with
    the same key and the same training seed are one training."""
    best = point["found"]["best"]
    return json.dumps([best["k"], best.get("rate", {})], sort_keys=True)


def pruned(model: torch.nn.Module, spec: dict, rates: dict[str, float]) -> torch.nn.Module:
    """``model`` physically pruned (FPGM) at ``rates``, not fine-tuned."""
    if not any(r > 0 for r in rates.values()):
        return copy.deepcopy(model).eval()
    net, _, _ = prune_model(copy.deepcopy(model), spec, PruneConfig(rate=0.0, rates=rates))
    return net.eval()


def frontier_args(ap: argparse.ArgumentParser) -> None:
    """The options of every benchmark that reads a frontier's committed records."""
    ap.add_argument("--name", default="resnet20")
    # the ResNet-20 frontier was built on the baseline before session 22's
    ap.add_argument("--model", default="checkpoints/scratch-106ep-resnet20/best.safetensors",
                    help="the frontier's starting weights (checked against the records' digest)")
    ap.add_argument("--mode", default="dkm0.04", help="the frontier's training mode (dkm0.04: "
                    "the ResNet-20 frontier's; dkm0.04-bn: with batch-norm re-estimation)")
    ap.add_argument("--points", default="", help="the frontier's records folder "
                    "(default: results/frontier/points/<name>)")
    ap.add_argument("--threads", type=int, default=0)
    add_config_args(ap, DataConfig)  # --source, --data-dir, --val-size, --image-size, ...


def frontier_data(args: argparse.Namespace) -> DataConfig:
    """The data settings ``frontier_args`` gave."""
    return config_from_args(DataConfig, args)


def frontier_records(folder: Path, mode: str, model: str) -> dict[str, dict]:
    """The finished points of a frontier trained from ``model``'s weights (records are keyed
    by their digest): tag -> the record's value, its ``key`` and the searched policy
    (``found``)."""
    digest = model_digest(model)
    out = {}
    for tag, saved in point_records(folder, mode, strict=True).items():
        if saved["key"]["model"] != digest:
            continue
        found = json.loads((folder / f"{tag}.search.json").read_text())["value"]
        out[tag] = {**saved["value"], "key": saved["key"], "found": found}
    return out
