"""Jobs (what the CLI subcommands call): resolve a model, train it, evaluate a checkpoint,
baselines."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from rlcompress.data import DataConfig, load_data
from rlcompress.engine.batches import evaluate_model
from rlcompress.engine.runtime import set_threads
from rlcompress.engine.train import TrainConfig, fit, write_summary
from rlcompress.fileio import write_json
from rlcompress.models import (
    build_model,
    load_checkpoint,
    load_state_dict_file,
    load_weights,
    model_spec,
)
from rlcompress.paths import baseline_path, pretrained_path

TORCH_SUFFIXES = (".th", ".pt", ".pth", ".tar", ".ckpt", ".bin")


def default_init(model: str, init: str | None) -> str | None:
    """``baseline`` for a bare registered model name given without ``init`` (stages that need a
    trained model start from the committed clean baseline); ``init`` otherwise."""
    path = Path(model)
    if init is None and not path.suffix and not path.is_dir() and not path.with_suffix(".json").is_file():
        return "baseline"
    return init


def resolve_model(
    model: str, init: str | None = None, num_classes: int = 10, require_weights: bool = False
) -> tuple[nn.Module, dict]:
    """A model and its spec from a registered name or a ``X.safetensors``/``X.json`` checkpoint.

    ``init`` loads weights into a registered model: a path, ``baseline`` (the committed clean
    baseline of that name, trained from scratch on the train split), ``pretrained`` (the shared
    checkpoint of that name), or ``scratch``/None for a random init. With ``require_weights``
    (pruning, sharing, searching: stages that need a trained model) a bare model name without
    ``init`` is an error instead of a silently random network.
    """
    path = Path(model)
    init = None if init == "scratch" else init
    if path.suffix == ".rlc":
        if init:
            raise ValueError("--init applies to a model name, not to a compressed file")
        from rlcompress.codec import load_compressed

        net, manifest = load_compressed(path)
        return net, manifest["spec"]
    if path.suffix.lower() in TORCH_SUFFIXES:
        raise ValueError(f"{model} is a torch weights file without an architecture: pass the "
                         f"architecture as --model and the file as --init (e.g. --model resnet20 "
                         f"--init {model})")
    if path.suffix in (".safetensors", ".json") or path.with_suffix(".json").is_file():
        if init:
            raise ValueError("--init applies to a model name, not to a checkpoint path")
        return load_checkpoint(path)
    if init is None and require_weights:
        raise ValueError(f"{model!r} is a model name without weights: this stage needs a trained "
                         f"model (a checkpoint X.safetensors, or --init baseline / pretrained / PATH)")
    if init == "baseline":
        return load_checkpoint(baseline_path(model))
    spec = model_spec(model, num_classes=num_classes)
    net = build_model(spec)
    if init:
        src = pretrained_path(model) if init == "pretrained" else Path(init)
        load_weights(net, load_state_dict_file(src))
    return net, spec


def train(
    model: str = "resnet20",
    out: str = "runs/train",
    init: str | None = None,
    data: DataConfig | None = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
    test: bool = True,
    teacher: str | None = None,
) -> dict:
    """Train (or fine-tune, with ``init``) a model; select the best epoch on validation.

    Writes the run directory (see :mod:`rlcompress.engine.train`) and ``summary.json`` with
    the best epoch's validation and, if ``test``, test accuracy. ``teacher`` (a checkpoint, or a
    model name for its committed clean baseline) is distilled from with weight ``cfg.distill``;
    validation stays clean only if the teacher never trained on the validation split.
    """
    data_cfg, cfg = data or DataConfig(), cfg or TrainConfig()
    if (teacher is None) != (cfg.distill == 0):
        raise ValueError("distillation needs both a teacher and --distill > 0")
    dataset = load_data(data_cfg, progress=cfg.progress)
    net, spec = resolve_model(model, init, dataset.num_classes)
    teacher_net = None
    if teacher is not None:
        teacher_net, _ = resolve_model(teacher, default_init(teacher, None), dataset.num_classes,
                                       require_weights=True)
    extra = {"model": model, "init": init, "teacher": teacher, "data": data_cfg.__dict__,
             "argv": sys.argv}
    result = fit(net, spec, dataset, cfg, out, resume=resume, extra_config=extra,
                 teacher=teacher_net)
    if (Path(out) / "summary.json").is_file():
        return result
    best, _ = load_checkpoint(Path(out) / "best.safetensors")
    summary = {"model": model, "init": init, **result}
    summary["val"] = evaluate_model(best, dataset, "val", cfg.precision, cfg.device)
    if test:
        summary["test"] = evaluate_model(best, dataset, "test", cfg.precision, cfg.device)
    write_summary(out, summary)
    return summary


def evaluate_checkpoint(
    model: str,
    init: str | None = None,
    split: str = "test",
    data: DataConfig | None = None,
    precision: str = "bf16",
    limit: int = 0,
    threads: int = 0,
    progress: bool = True,
) -> dict:
    """Accuracy of a checkpoint (or a registered model with ``init`` weights) on a split."""
    set_threads(threads)
    # a model file is read (and a bad one refused) before any data is looked for
    net = resolve_model(model, init)[0] if Path(model).suffix else None
    dataset = load_data(data or DataConfig(), progress=progress)
    if net is None:
        net, _ = resolve_model(model, init, dataset.num_classes)
    if limit:
        setattr(dataset, split, getattr(dataset, split).subset(limit))
    result = evaluate_model(net, dataset, split, precision, progress=progress)
    return {"model": model, "init": init, "split": split, **result}


def baseline(
    model: str = "resnet20",
    out: str | None = None,
    results: str = "results/baseline",
    init: str = "pretrained",
    data: DataConfig | None = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
) -> dict:
    """Fine-tune a pretrained model on the dataset and write ``results/baseline/<model>.json``.

    This is the reference every compressed row is compared against.
    """
    out = out or f"runs/baseline-{model}"
    summary = train(model, out, init, data, cfg, resume=resume or Path(out, "state.pt").is_file())
    record = {
        "model": model,
        "top1": round(summary["test"]["top1"], 2),
        "top5": round(summary["test"]["top5"], 2),
        "val_top1": round(summary["val"]["top1"], 2),
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "seconds": summary["seconds"],
        "run_dir": str(out),
        "command": "rlcompress " + " ".join(sys.argv[1:]) if sys.argv else "",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    Path(results).mkdir(parents=True, exist_ok=True)
    write_json((Path(results) / f"{Path(model).stem}.json"), record)
    return record
