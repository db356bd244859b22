"""Jobs (what the CLI subcommands call): resolve a model, train it, evaluate a checkpoint,
baselines."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
import sys
import warnings
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
from rlcompress.models.user import import_model
from rlcompress.paths import BASELINE_DIR, baseline_path, pretrained_path

TORCH_SUFFIXES = (".th", ".pt", ".pth", ".tar", ".ckpt", ".bin")


def default_init(model: str, init: str | None) -> str | None:
    """``baseline`` for a bare registered model name given without ``init`` (stages that need a
    trained model start from the committed clean baseline); ``init`` otherwise."""
    path = Path(model)
    if init is None and not path.suffix and not path.is_dir() and not path.with_suffix(".json").is_file():
        return "baseline"
    return init


def check_classes(spec: dict, num_classes: int | None, model: str) -> None:
    """A model whose classifier has another number of classes than the data would fail at its
    first loss or evaluation with an IndexError (or silently score a few classes), so it is a
    ValueError that says which data the model belongs to."""
    have = spec.get("num_classes")
    if num_classes and have and have != num_classes:
        raise ValueError(f"{model} classifies {have} classes, the data has {num_classes}: give "
                         "the data it was trained on (--source ...)")


def resolve_model(
    model: str, init: str | None = None, num_classes: int | None = None,
    require_weights: bool = False, model_class: str | None = None,
    class_args: str | dict | None = None,
) -> tuple[nn.Module, dict]:
    """A model and its spec from a registered name or a ``X.safetensors``/``X.json`` checkpoint.

    ``init`` loads weights into a registered model: a path, ``baseline`` (the committed clean
    baseline of that name, trained from scratch on the train split), ``pretrained`` (the shared
    checkpoint of that name), or ``scratch``/None for a random init. ``num_classes``: the data's
    (a registered model is built with it, default 10; a checkpoint must match it). With
    ``require_weights``
    (pruning, sharing, searching: stages that need a trained model) a bare model name without
    ``init`` is an error instead of a silently random network. ``model_class`` (with
    ``class_args``) names the class of a compressed user model's file
    (:func:`rlcompress.models.user.import_model`).
    """
    path = Path(model)
    init = None if init == "scratch" else init
    if model_class and path.suffix != ".rlc":
        raise ValueError("--class names the class of a compressed file of your own model (.rlc)")
    if path.suffix == ".rlc":
        if init:
            raise ValueError("--init applies to a model name, not to a compressed file")
        from rlcompress.codec import load_compressed

        instance = import_model(model_class, class_args) if model_class else None
        net, manifest = load_compressed(path, model=instance)
        check_classes(manifest["spec"], num_classes, model)
        return net, manifest["spec"]
    if path.suffix.lower() in TORCH_SUFFIXES:
        raise ValueError(f"{model} is a torch weights file without an architecture: pass the "
                         f"architecture as --model and the file as --init (e.g. --model resnet20 "
                         f"--init {model})")
    if path.suffix in (".safetensors", ".json") or path.with_suffix(".json").is_file():
        if init:
            raise ValueError("--init applies to a model name, not to a checkpoint path")
        net, spec = load_checkpoint(path)
        check_classes(spec, num_classes, model)
        return net, spec
    if init is None and require_weights:
        raise ValueError(f"{model!r} is a model name without weights: this stage needs a trained "
                         f"model (a checkpoint X.safetensors, or --init baseline / pretrained / PATH)")
    if init == "baseline":
        net, spec = load_checkpoint(baseline_path(model))
        check_classes(spec, num_classes, f"the {model} baseline")
        return net, spec
    spec = model_spec(model, num_classes=num_classes or 10)
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
    teacher_net = load_teacher(teacher, data_cfg, dataset.num_classes) if teacher else None
    extra = {"model": model, "init": init, "teacher": teacher, "data": data_cfg.__dict__,
             "argv": sys.argv}
    result = fit(net, spec, dataset, cfg, out, resume=resume, extra_config=extra,
                 teacher=teacher_net)
    if (Path(out) / "summary.json").is_file():
        return result
    best, _ = load_checkpoint(Path(out) / "best.safetensors")
    summary = {"model": model, "init": init, "train_images": len(dataset.train), **result}
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
    model_class: str | None = None,
    class_args: str | dict | None = None,
) -> dict:
    """Accuracy of a checkpoint (or a registered model with ``init`` weights, or a user model's
    ``.rlc`` with its ``model_class``) on a split."""
    set_threads(threads)
    # a model file is read (and a bad one refused) before any data is looked for
    net, spec = (resolve_model(model, init, model_class=model_class, class_args=class_args)
                 if Path(model).suffix else (None, {}))
    dataset = load_data(data or DataConfig(), progress=progress)
    check_classes(spec, dataset.num_classes, model)
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
    init: str = "scratch",
    data: DataConfig | None = None,
    cfg: TrainConfig | None = None,
    resume: bool = False,
) -> dict:
    """Train a baseline, the reference every compressed row is compared against, and write its
    record, per-epoch metrics and learning curve under ``results``.

    From scratch (the default) on the train split alone, the record is ``<model>.json``. Started
    from other weights (``pretrained``, a path) it is ``<model>_finetuned.json``: such a start
    may have seen the validation images, so its record never replaces the clean one.
    """
    out = out or f"runs/baseline-{model}"
    train(model, out, init, data, cfg, resume=resume or Path(out, "state.pt").is_file())
    rec = baseline_record(Path(out))  # the run's summary.json, also when it had finished before
    name = Path(model).stem + ("" if rec["init"] == "scratch" else "_finetuned")
    write_baseline(rec, Path(out), Path(results), name)
    return rec


def baseline_record(run: Path, summary: dict | None = None, machine: str | None = None,
                    command: str | None = None) -> dict:
    """The baseline record of a finished training run (``summary``: its summary, by default
    ``run/summary.json``; ``machine`` and ``command`` override what the run's config says,
    e.g. for a run made on the device machine by a script)."""
    summary = summary or json.loads((run / "summary.json").read_text())
    config = json.loads((run / "config.json").read_text())
    train_cfg, argv = config["train"], config.get("argv") or []
    keys = ("epochs", "batch_size", "lr", "schedule", "warmup", "momentum", "weight_decay",
            "label_smoothing", "seed", "augment", "precision", "select")
    return {
        "model": summary["model"], "init": summary.get("init") or "scratch",
        "train_images": summary.get("train_images"),
        "top1": round(summary["test"]["top1"], 2), "top5": round(summary["test"]["top5"], 2),
        "val_top1": round(summary["val"]["top1"], 2),
        "val_test_gap": round(summary["val"]["top1"] - summary["test"]["top1"], 2),
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
        "seconds": summary["seconds"],
        "command": command or ("rlcompress " + " ".join(argv[1:]) if argv else ""),
        "recipe": {k: train_cfg[k] for k in keys if k in train_cfg}
        | {k: train_cfg[k] for k in ("cutout", "time_budget", "distill") if train_cfg.get(k)}
        | _teacher(config),
        "machine": machine or f"{platform.machine()}, {train_cfg.get('threads') or 'all'} "
                              f"thread(s) of {os.cpu_count()} cores, torch {torch.__version__}",
        "run_dir": str(run),
    }


def load_teacher(teacher: str, data: DataConfig, num_classes: int) -> nn.Module:
    """A teacher for distillation (a checkpoint, or a model name for its committed clean
    baseline), in eval mode; warns where it may have trained on ``data``'s validation split."""
    net, _ = resolve_model(teacher, default_init(teacher, None), num_classes, require_weights=True)
    doubt = teacher_doubt(teacher, data)
    if doubt:
        warnings.warn(f"teacher {teacher}: {doubt}, so this run's validation top-1 (and the "
                      f"epoch it selects) may not be clean", stacklevel=3)
    return net.eval()


def teacher_doubt(teacher: str, data: DataConfig, depth: int = 0) -> str:
    """Why a teacher may have trained on this run's validation images ('' if its run folder
    shows it did not): distilling from it would leak them into the student. Read from the
    ``config.json`` a training writes beside its weights."""
    weights = baseline_path(teacher) if default_init(teacher, None) else Path(teacher)
    config_file = weights.parent / "config.json"
    if weights.suffix != ".safetensors" or not config_file.is_file():
        return "no training record (config.json) beside its weights to check its data"
    config = json.loads(config_file.read_text())
    init, split = config.get("init"), config.get("data") or {}
    if init == "pretrained":
        return "it started from the shared checkpoint, whose training saw every original " \
               "training image"
    if str(init or "").endswith(TORCH_SUFFIXES):
        return f"it started from {init}, weights trained on data this cannot check"
    for key in ("val_size", "split_seed"):
        if key in split and split[key] != getattr(data, key):
            return (f"it trained on another train/validation split ({key} {split[key]}, "
                    f"here {getattr(data, key)})")
    if str(init or "").endswith(".safetensors") and depth < 8:  # fine-tuned from a checkpoint
        inner = teacher_doubt(str(init), data, depth + 1)
        return f"it started from {init}: {inner}" if inner else ""
    return ""


def _teacher(config: dict) -> dict:
    """The distillation part of a recipe: the temperature and which weights taught (a bare
    model name stands for its committed clean baseline, so the file is named)."""
    train_cfg, teacher = config["train"], config.get("teacher")
    if not train_cfg.get("distill") or not teacher:
        return {}
    if default_init(teacher, None):
        teacher = f"{BASELINE_DIR.format(model=teacher)}/best.safetensors"
    return {"distill_temperature": train_cfg.get("distill_temperature", 1.0), "teacher": teacher}


def write_baseline(record: dict, run: Path, results: Path, name: str) -> None:
    """``<results>/<name>.json``, ``<name>_metrics.csv`` (the run's per-epoch log) and
    ``<name>_curve.png`` (loss and top-1 per epoch)."""
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / f"{name}.json", record)
    shutil.copyfile(run / "metrics.csv", results / f"{name}_metrics.csv")
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    start = "from scratch" if record["init"] == "scratch" else f"from {record['init']}"
    plot_curve(rows, results / f"{name}_curve.png", f"{record['model']} {start}: test "
               f"{record['top1']}%, validation {record['val_top1']}%")


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    """Training/validation loss and top-1 per epoch of a run's ``metrics.csv`` rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [float(r["train_loss"]) for r in rows], label="train loss")
    ax[0].plot(ep, [float(r["val_loss"]) for r in rows], label="validation loss")
    ax[1].plot(ep, [float(r["train_top1"]) for r in rows], label="train top-1 (augmented)")
    ax[1].plot(ep, [float(r["val_top1"]) for r in rows], label="validation top-1")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax[1].set_ylim(40, 100)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
