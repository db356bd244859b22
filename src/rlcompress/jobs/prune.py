"""The ``rlcompress prune`` job: prune, fine-tune, measure, report.

Run directory::

    masks.safetensors          the kept filters of every conv
    pruned.safetensors/.json   the network right after pruning (before fine-tuning)
    finetune/                  the fine-tuning run (see rlcompress.engine.train)
    summary.json               accuracy, sizes, FLOPs, latency

Each step is skipped when its output exists, so an interrupted job resumes where it stopped.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from rlcompress.codec.sizes import float_state_bytes, layer_weight_count
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import TrainConfig, evaluate_model, fit
from rlcompress.fileio import write_json
from rlcompress.jobs.train import resolve_model
from rlcompress.models import load_checkpoint, save_checkpoint
from rlcompress.models.resnet_cifar import ARCH
from rlcompress.pruning.masks import FilterMasks, PruneConfig, paper_weight_counts
from rlcompress.pruning.measure import count_flops, count_params, latency_ms
from rlcompress.pruning.physical import shrink_resnet
from rlcompress.rundir import open_run_dir

MODES = ("physical", "mask")


def prune_model(
    model: torch.nn.Module, spec: dict, cfg: PruneConfig, mode: str = "physical"
) -> tuple[torch.nn.Module, dict, FilterMasks]:
    """Mask ``model`` by ``cfg``; in ``physical`` mode also shrink it. Returns (model, spec, masks)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    masks = FilterMasks.compute(model, cfg)
    masks.apply(model)
    if mode == "mask":
        return model, spec, masks
    if spec.get("arch") != ARCH:
        raise ValueError(
            "physical mode from the CLI needs a CIFAR ResNet spec; for other models use "
            "rlcompress.pruning.prune_groups (coupled channel groups) in the library or --mode mask"
        )
    small, small_spec = shrink_resnet(model, spec, masks)
    return small, small_spec, masks


def _latencies(model: torch.nn.Module, threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    return {f"batch{b}": round(latency_ms(model, b, repeats=30 if b == 1 else 5), 3)
            for b in (1, 256)}


def prune(
    model: str,
    out: str = "runs/prune",
    prune_cfg: PruneConfig | None = None,
    mode: str = "physical",
    data: DataConfig | None = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    results: str | None = None,
    latency: bool = True,
) -> dict:
    """Prune a trained model, fine-tune it and write ``summary.json`` (and ``results`` if given).

    ``latency``: time CPU forward passes of the dense and the pruned model for the summary
    (``latency_ms``; None without), a few seconds per model that a frontier point does not use.
    """
    pcfg, data_cfg, cfg = prune_cfg or PruneConfig(), data or DataConfig(), cfg or TrainConfig()
    run = open_run_dir(out, resume)
    dataset = load_data(data_cfg, progress=cfg.progress)
    dense, dense_spec = resolve_model(model, None, dataset.num_classes,
                                      require_weights=True)
    dense.eval()
    if (run / "pruned.safetensors").is_file():
        net, spec = load_checkpoint(run / "pruned.safetensors")
        masks = FilterMasks.load(run / "masks.safetensors")
    else:
        net, spec, masks = prune_model(copy.deepcopy(dense), dense_spec, pcfg, mode)
        # the compressed file's ratios are counted against this unpruned original
        spec = {**spec, "origin": {"weights": layer_weight_count(dense),
                                   "state_bytes": float_state_bytes(dense)}}
        masks.save(run / "masks.safetensors")
        save_checkpoint(net, spec, run, "pruned")
    before = evaluate_model(net, dataset, "val", cfg.precision, cfg.device)
    hooks = [masks] if mode == "mask" else []
    epoch_hooks = ([lambda m, _e: masks.recompute(m, pcfg)] if mode == "mask" and pcfg.soft else [])
    extra = {"model": model, "prune": pcfg.__dict__, "mode": mode, "data": data_cfg.__dict__,
             "argv": sys.argv}
    result = fit(net, spec, dataset, cfg, run / "finetune", resume=resume, step_hooks=hooks,
                 extra_config=extra, epoch_hooks=epoch_hooks)
    best, best_spec = load_checkpoint(run / "finetune" / "best.safetensors")
    best.eval()
    if mode == "mask":  # soft masks may have moved: report what the final weights keep
        masks.apply(best)
    val = evaluate_model(best, dataset, "val", cfg.precision, cfg.device)
    test = evaluate_model(best, dataset, "test", cfg.precision, cfg.device)
    dense_w, kept_w = paper_weight_counts(dense, masks)
    summary = {
        "model": model, "criterion": pcfg.criterion, "rate": pcfg.rate, "mode": mode,
        "soft": pcfg.soft, "top1": round(test["top1"], 2), "top5": round(test["top5"], 2),
        "val_top1": round(val["top1"], 2), "val_top1_before_finetune": round(before["top1"], 2),
        "paper_ratio": round(dense_w / kept_w, 4), "weights_dense": dense_w, "weights_kept": kept_w,
        "params": count_params(best), "params_dense": count_params(dense),
        "flops": count_flops(best), "flops_dense": count_flops(dense),
        "latency_ms": {"pruned": _latencies(best, cfg.threads or torch.get_num_threads()),
                       "dense": _latencies(dense, cfg.threads or torch.get_num_threads())}
        if latency else None,
        "kept_filters": masks.kept_filters(),
        "epochs": result["epochs"], "best_epoch": result["best_epoch"],
        "seconds": result["seconds"], "run_dir": str(run),
        "command": "rlcompress " + " ".join(sys.argv[1:]),
        "spec": best_spec if mode == "physical" else None,
    }
    write_json((run / "summary.json"), summary)
    if results:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(results), summary)
    return summary
