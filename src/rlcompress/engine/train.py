"""Resumable supervised training with a run directory.

A run directory holds::

    config.json            resolved training config (and whatever the caller adds)
    metrics.csv            one row per completed epoch
    last.safetensors/.json model weights + architecture spec after the last completed epoch
    best.safetensors/.json the epoch with the best validation top-1
    state.pt               weights, optimizer state, epoch, best score (loads weights_only)
    summary.json           written when training ends

Every epoch ends by writing ``last.*`` and ``state.pt`` atomically, so an interrupted run
resumed with ``resume=True`` loses at most the epoch in flight. The learning rate is a pure
function of the global step and each epoch's batch order a pure function of (seed, epoch), so a
resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rlcompress import dist
from rlcompress.checks import check_fields
from rlcompress.data import BatchLoader, ImageData
from rlcompress.data.loaders import EpochSeeded, LoaderData, Sharded
from rlcompress.engine.ddp import local_weight, sync_batchnorm, wrap_ddp
from rlcompress.engine.evaluate import evaluate
from rlcompress.engine.runtime import (
    autocast,
    pick_device,
    seed_everything,
    set_threads,
    to_channels_last,
)
from rlcompress.fileio import atomic_path, write_json
from rlcompress.models import CheckpointError, load_weights, save_checkpoint
from rlcompress.models.shapes import NORMS
from rlcompress.rundir import open_run_dir, read_rows, write_rows

# epoch lines where no progress bar shows them (``rlcompress ... --quiet`` sends them to stderr)
log = logging.getLogger("rlcompress.train")
StepHook = Callable[[nn.Module], None]
EpochHook = Callable[[nn.Module, int], None]
# (model, validate) -> the validation result of the model as the hook leaves it, or None; a
# hook that validates anyway hands its last result back so that fit need not validate again
EvalHook = Callable[[nn.Module, Callable[[], dict]], dict | None]
# how fit() picks the ``best`` checkpoint (TrainConfig.select)
SELECT = ("best", "last", "start-or-best")
# the selection after a pruning fine-tune (``rlcompress run``, ``rlcompress.compress``): the
# pruned model as it was competes with its fine-tuned epochs, since after a light pruning a
# restart at lr 0.05 loses more than it recovers (4 epochs took a frontier point that pruned
# 0.4% of the weights from 88.92% to 88.34% validation top-1)
PRUNE_SELECT = "start-or-best"
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
METRIC_FIELDS = [
    "epoch", "lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5",
    "seconds", "img_per_s",
]


@dataclass
class TrainConfig:
    """Training settings.

    Attributes:
        epochs: passes over the training split.
        batch_size: training batch size.
        lr: peak learning rate.
        schedule: ``onecycle`` (cosine warm-up to ``lr`` then cosine decay) or ``cosine``.
        warmup: fraction of all steps spent warming up.
        momentum: SGD momentum (Nesterov).
        weight_decay: L2 weight decay.
        label_smoothing: cross-entropy label smoothing.
        seed: seed of batch order, augmentation and any random init.
        augment: random crop (4-pixel padding) + horizontal flip on training images.
        cutout: with ``augment``, also Cutout squares of this side (0: none; 8-16 on CIFAR).
        precision: ``bf16`` (CPU autocast / CUDA AMP), ``fp16`` (CUDA) or ``fp32``.
        channels_last: NHWC memory layout (faster convolutions on CPU).
        compile: train through ``torch.compile`` (evaluation stays eager). A compiled step is
            tried first on a copy of the model; if it fails (no compiler on the machine, an
            unsupported layer) training goes on eagerly with a warning.
        compile_mode: ``torch.compile``'s mode: ``default``, ``reduce-overhead`` (CUDA graphs:
            a small CNN on a GPU is bound by kernel launches) or ``max-autotune``.
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: intra-op CPU threads (0: one per core).
        eval_batch_size: batch size for validation and test.
        progress: show progress bars.
        select: which epoch becomes ``best``: ``best`` (highest validation top-1), ``last``, or
            ``start-or-best``: like ``best``, with the starting weights as epoch 0 (measured
            before the first epoch), so a fine-tune that only loses accuracy (a pruning that
            removed nearly nothing, retrained at a high learning rate) leaves the model as it
            was. Use ``last`` when the validation images were seen by the starting weights (the
            shared checkpoints were trained on all 50,000 training images), since early epochs
            then score high on validation by memory, not by generalisation.
        distill: weight of knowledge distillation from a teacher passed to :func:`fit` (0: plain
            cross-entropy; 1: the teacher's soft labels only).
        distill_temperature: softmax temperature of the distillation term. Shared layers sum
            the gradients of all their weights into each centroid, so the denser gradient of
            a high temperature diverges there: at 4 and lr 0.01 a ResNet-20 k16 model fell from
            92% to 30% train accuracy within 20 steps, at 1 and 2 it did not.
        epoch_images: training images per epoch (0: the whole training split). An epoch then
            trains on the first batches of its own shuffled order, so successive epochs see
            different images and a short run (``rlcompress run --quick``) costs a fraction of
            an epoch; the schedule spans the shortened epochs.
        time_budget: wall seconds the whole run may take (0: no limit). ``epochs`` is then the
            most epochs: after the second epoch the run fixes its number of epochs from that
            epoch's duration so that the schedule ends inside the budget
            (a truncated cosine would end at a high learning rate), and keeps it on resume.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.05
    schedule: str = "onecycle"
    warmup: float = 0.15
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    seed: int = 0
    augment: bool = True
    cutout: int = 0
    precision: str = "bf16"
    channels_last: bool = True
    compile: bool = False
    compile_mode: str = "default"
    device: str = "auto"
    threads: int = 0
    eval_batch_size: int = 512
    progress: bool = True
    select: str = "best"
    distill: float = 0.0
    distill_temperature: float = 1.0
    epoch_images: int = 0
    time_budget: float = 0.0

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("epochs", "lr", "weight_decay", "threads", "seed", "cutout",
                                "epoch_images", "time_budget"),
                     ge1=("batch_size", "eval_batch_size"), unit=("momentum", "distill"),
                     choices={"schedule": ("onecycle", "cosine"), "select": SELECT,
                              "precision": ("bf16", "fp16", "fp32"),
                              "compile_mode": COMPILE_MODES})
        if not 0 <= self.warmup < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("TrainConfig.warmup and label_smoothing must be in [0, 1)")
        if not self.distill_temperature > 0:
            raise ValueError("TrainConfig.distill_temperature must be > 0")


# the first epoch pays one-off costs (cuDNN autotuning, allocator warm-up), so the second
# epoch's duration sets a time-budgeted run's length
BUDGET_PROBE_EPOCH = 2


def budgeted_epochs(cfg: TrainConfig, epoch: int, elapsed: float, epoch_seconds: float) -> int:
    """Epochs a ``cfg.time_budget`` run keeps to, decided after ``epoch`` with ``elapsed`` wall
    seconds spent and ``epoch_seconds`` per further epoch: as many as fit, at least ``epoch``
    and at most ``cfg.epochs``."""
    fit_more = int(max(0.0, cfg.time_budget - elapsed) // max(epoch_seconds, 1e-9))
    return max(epoch, min(cfg.epochs, epoch + fit_more))


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at global ``step`` of ``total`` (a pure function, so resume is exact)."""
    warm = max(1, int(cfg.warmup * total)) if cfg.warmup > 0 else 0
    floor = cfg.lr * 1e-4
    if step < warm:
        t = step / warm
        start = cfg.lr / 25 if cfg.schedule == "onecycle" else 0.0
        return start + (cfg.lr - start) * (1 - math.cos(math.pi * t)) / 2
    if cfg.schedule not in ("onecycle", "cosine"):
        raise ValueError(f"schedule must be onecycle or cosine, got {cfg.schedule!r}")
    t = (step - warm) / max(1, total - warm)
    return floor + (cfg.lr - floor) * (1 + math.cos(math.pi * min(t, 1.0))) / 2


def make_loaders(data: ImageData | LoaderData, cfg: TrainConfig,
                 device: torch.device | None = None) -> tuple:
    """Training loader (shuffled, augmented) and validation loader for ``data``.

    Under torchrun each rank gets its slice of every global batch of ``cfg.batch_size``. With
    a CUDA ``device``, in-memory images move there once and batches are made there.
    """
    on = device if device is not None and device.type == "cuda" else None
    rank, world = (dist.rank(), dist.world_size()) if dist.initialized() else (0, 1)
    if isinstance(data, LoaderData):
        train = EpochSeeded(data.train_loader, cfg.seed)
        if world == 1:
            return train, data.val_loader
        return Sharded(train, rank, world), Sharded(data.val_loader, rank, world)
    train = BatchLoader(
        data.train, cfg.batch_size, data.mean, data.std, shuffle=True, augment=cfg.augment,
        drop_last=len(data.train) > cfg.batch_size, seed=cfg.seed, channels_last=cfg.channels_last,
        rank=rank, world_size=world, cutout=cfg.cutout, device=on,
    )
    val = BatchLoader(
        data.val, cfg.eval_batch_size, data.mean, data.std, channels_last=cfg.channels_last,
        rank=rank, world_size=world, device=on,
    )
    return train, val


class _FirstBatches:
    """The first ``n`` batches of a loader's current epoch (``len``, ``global_size`` and
    ``set_epoch`` kept)."""

    def __init__(self, loader: object, n: int) -> None:
        self.loader, self.n = loader, min(n, len(loader))
        self.global_size = getattr(loader, "global_size", None)

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` of the wrapped loader."""
        self.loader.set_epoch(epoch)

    def __iter__(self):  # noqa: ANN204
        for i, batch in enumerate(self.loader):
            if i == self.n:
                return
            yield batch


def short_finetune(model: nn.Module, data: ImageData | LoaderData, cfg: TrainConfig, steps: int,
                   teacher: nn.Module | None = None, hooks: list[StepHook] | None = None) -> nn.Module:
    """Train ``model`` in place for ``steps`` batches (the first of epoch 1's seeded order),
    with ``cfg``'s schedule spread over those steps and no validation pass: a cheap look at how
    well a compressed model recovers (e.g. a search's re-scoring). Returns the model in eval
    mode."""
    if steps < 1:
        return model.eval()
    device = pick_device(cfg.device)
    loader, _ = make_loaders(data, cfg, device)
    loader.set_epoch(1)
    first = _FirstBatches(loader, steps)
    model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    if teacher is not None:
        teacher.to(device).eval()
    opt = _optimizer(model, cfg)
    _train_epoch(model, first, opt, cfg, device, 0, len(first), hooks or [], "short fine-tune",
                 teacher)
    return model.eval()


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
        weight_decay=cfg.weight_decay,
    )


def distill_loss(logits: torch.Tensor, y: torch.Tensor, teacher_logits: torch.Tensor | None,
                 cfg: TrainConfig) -> torch.Tensor:
    """Cross-entropy, blended with Hinton et al.'s temperature-scaled KL to a teacher."""
    ce = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    if teacher_logits is None or cfg.distill <= 0:
        return ce
    t = cfg.distill_temperature
    kl = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                  reduction="batchmean", log_target=True)
    return (1 - cfg.distill) * ce + cfg.distill * t * t * kl


def _train_epoch(
    model: nn.Module,
    loader: BatchLoader,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    device: torch.device,
    step0: int,
    total_steps: int,
    step_hooks: list[StepHook],
    desc: str,
    teacher: nn.Module | None = None,
) -> tuple[float, float, int]:
    model.train()
    # running sums stay on the device: a per-step .item() would stall a GPU's queue every step
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, step = 0, step0
    bar = tqdm(loader, desc=desc, disable=not cfg.progress, leave=False)
    graphs = cfg.compile and cfg.compile_mode in ("reduce-overhead", "max-autotune")
    # a user's loader may end on a batch of one, on which a batch norm over (N, C) cannot train
    # (and any batch norm learns a meaningless statistic); across ranks every step must run
    skip_single = dist.world_size() == 1 and any(isinstance(m, NORMS) for m in model.modules())
    for i, (x, y) in enumerate(bar):
        if skip_single and len(y) == 1:
            step += 1
            continue
        if graphs:  # CUDA graph outputs of the last step may be overwritten from here on
            torch.compiler.cudagraph_mark_step_begin()
        lr = lr_at(step, total_steps, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, cfg.precision):
            soft = None
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(x).float()
            logits = model(x)
            loss = distill_loss(logits.float(), y, soft, cfg) if len(y) else logits.sum() * 0.0
        opt.zero_grad(set_to_none=True)
        (loss * local_weight(len(y), getattr(loader, "global_size", None))).backward()
        opt.step()
        for hook in step_hooks:
            hook(model)
        step += 1
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if cfg.progress and i % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.3f}",
                            acc=f"{100 * correct.item() / max(seen, 1):.1f}", lr=f"{lr:.4f}")
    loss_total, n_correct, seen = dist.all_reduce_sum([loss_sum.item(), correct.item(), seen])
    return loss_total / max(seen, 1), 100.0 * n_correct / max(seen, 1), step


def fit(
    model: nn.Module,
    spec: dict,
    data: ImageData,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: bool = False,
    step_hooks: list[StepHook] | None = None,
    extra_config: dict | None = None,
    epoch_hooks: list[EpochHook] | None = None,
    teacher: nn.Module | None = None,
    eval_hooks: list[EvalHook] | None = None,
) -> dict:
    """Train ``model`` on ``data.train``, select on ``data.val``; return the summary dict.

    ``step_hooks`` run after every optimizer step (pruning masks use this); ``epoch_hooks``
    run before every epoch with its number, and must depend only on the weights so that a
    resumed run repeats them exactly (soft pruning recomputes masks there). A ``teacher``
    (kept in eval mode) is distilled from when ``cfg.distill > 0``. ``eval_hooks`` run after
    every epoch's training, before its validation and checkpoints, as ``hook(model, validate)``;
    they may change buffers such as batch-norm statistics (re-estimated for what evaluation
    computes) and must depend only on the weights, like ``epoch_hooks``. ``validate()`` is the
    epoch's own validation; the last hook's return value, if not ``None``, is taken as the
    epoch's validation result instead of validating again. With ``resume``
    the run continues from ``run_dir``'s last completed epoch; a finished run returns its
    summary unchanged.

    Under ``torchrun`` the same call trains data-parallel (see :mod:`rlcompress.engine.ddp`):
    ``cfg.batch_size`` stays the global batch, so N ranks follow the one-process run.
    """
    if cfg.select not in SELECT:
        raise ValueError(f"select must be one of {SELECT}, got {cfg.select!r}")
    device = pick_device(cfg.device)
    dist.init(device)
    if device.type == "cuda":
        # fixed input shapes: let cuDNN time its convolution algorithms once and keep the best
        torch.backends.cudnn.benchmark = True
    cfg = replace(cfg, progress=cfg.progress and dist.is_main())
    run_dir = open_run_dir(run_dir, resume)
    state_path = run_dir / "state.pt"
    if resume:
        check_resumable(run_dir, cfg, extra_config)
    if resume and (run_dir / "summary.json").is_file():
        return json.loads((run_dir / "summary.json").read_text())
    set_threads(cfg.threads)
    seed_everything(cfg.seed)
    train_loader, val_loader = make_loaders(data, cfg, device)
    batch_size = getattr(train_loader, "batch_size", None) or cfg.batch_size
    if cfg.epoch_images > 0:
        train_loader = _FirstBatches(train_loader, max(1, cfg.epoch_images // batch_size))
    total_steps = cfg.epochs * len(train_loader)
    model.to(device)
    if cfg.channels_last:
        to_channels_last(model)
    opt = _optimizer(model, cfg)
    if cfg.distill > 0 and teacher is None:
        raise ValueError("distill > 0 needs a teacher model")
    teacher = teacher.to(device).eval() if cfg.distill > 0 else None
    if teacher is not None and cfg.channels_last:
        to_channels_last(teacher)
    start_epoch, best, elapsed = 1, {"val_top1": -1.0, "epoch": 0}, 0.0
    if resume and state_path.is_file():
        start_epoch, best, elapsed, planned = _resume_state(state_path, model, opt)
        if cfg.time_budget > 0 and planned:
            cfg = replace(cfg, epochs=planned)
            total_steps = cfg.epochs * len(train_loader)
        _say(cfg, f"{run_dir}: resuming at epoch {start_epoch}/{cfg.epochs}")
    planned = cfg.epochs if cfg.time_budget <= 0 or start_epoch > BUDGET_PROBE_EPOCH else 0
    config = {"train": asdict(cfg), **(extra_config or {})}
    write_json((run_dir / "config.json"), config)
    rows = read_rows(run_dir / "metrics.csv", "epoch", start_epoch - 1)
    if cfg.select == "start-or-best" and start_epoch == 1 and cfg.epochs > 0:
        start = evaluate(model, val_loader, device, cfg.precision)
        best = {"val_top1": start["top1"], "epoch": 0}
        save_checkpoint(model, spec, run_dir, "best")
    precision = cfg.precision

    def validate() -> dict:
        # the plain module: a compiled one would compile again for eval mode and for the last,
        # smaller batch
        return evaluate(model, val_loader, device, precision)

    # batch norm over the global batch and DDP only while training: the model the caller gets
    # back is the plain module
    with sync_batchnorm(model):
        runner = wrap_ddp(model, device)
        if cfg.compile and start_epoch <= cfg.epochs:  # (a finished run compiles nothing)
            runner = compiled_runner(runner, model, train_loader, cfg, device, start_epoch)
        epoch = start_epoch
        while epoch <= cfg.epochs:
            t0 = time.perf_counter()
            train_loader.set_epoch(epoch)
            for hook in epoch_hooks or []:
                hook(model, epoch)
            loss, acc, _ = _train_epoch(
                runner, train_loader, opt, cfg, device, (epoch - 1) * len(train_loader),
                total_steps, step_hooks or [], f"epoch {epoch}/{cfg.epochs}", teacher,
            )
            train_time = time.perf_counter() - t0
            val = None
            for hook in eval_hooks or []:
                val = hook(model, validate)
            val = val if val is not None else validate()
            seconds = time.perf_counter() - t0
            elapsed += seconds
            if not planned and epoch >= min(BUDGET_PROBE_EPOCH, cfg.epochs):
                planned = budgeted_epochs(cfg, epoch, elapsed, seconds)
                cfg, total_steps = replace(cfg, epochs=planned), planned * len(train_loader)
                config["train"]["epochs"] = planned
                write_json(run_dir / "config.json", config)
                _say(cfg, f"time budget {cfg.time_budget:.0f}s: {planned} epochs "
                          f"({seconds:.1f}s each)")
            rows.append({
                "epoch": epoch, "lr": round(lr_at(epoch * len(train_loader) - 1, total_steps, cfg), 6),
                "train_loss": round(loss, 5), "train_top1": round(acc, 3),
                "val_loss": round(val["loss"], 5), "val_top1": round(val["top1"], 3),
                "val_top5": round(val["top5"], 3), "seconds": round(seconds, 2),
                "img_per_s": round(len(train_loader) * batch_size / train_time, 1),
            })
            if cfg.select == "last" or val["top1"] > best["val_top1"]:
                best = {"val_top1": val["top1"], "epoch": epoch}
                save_checkpoint(model, spec, run_dir, "best")
            save_checkpoint(model, spec, run_dir, "last")
            write_rows(run_dir / "metrics.csv", METRIC_FIELDS, rows)
            # one file holds weights and optimizer, so they can never be from different epochs
            with atomic_path(state_path) as tmp:
                torch.save({
                    "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                    "best_val_top1": best["val_top1"], "best_epoch": best["epoch"], "seconds": elapsed,
                    "planned_epochs": planned,
                }, tmp)
            _say(cfg, f"epoch {epoch}/{cfg.epochs}  loss {loss:.4f}  train {acc:.2f}%  "
                      f"val {val['top1']:.2f}%  ({seconds:.0f}s)")
            epoch += 1
    if cfg.epochs == 0:  # no training asked: the model as given is the best and the last
        for name in ("best", "last"):
            save_checkpoint(model, spec, run_dir, name)
    if cfg.select == "last" and start_epoch > cfg.epochs and rows:
        # a finished run re-selected with ``last`` (e.g. resumed with a changed --select)
        save_checkpoint(model, spec, run_dir, "best")
        best = {"val_top1": float(rows[-1]["val_top1"]), "epoch": int(rows[-1]["epoch"])}
    return {
        "epochs": cfg.epochs,
        "best_epoch": best["epoch"],
        "best_val_top1": best["val_top1"],
        "final_val_top1": float(rows[-1]["val_top1"]) if rows else None,
        "seconds": round(elapsed, 1),
    }


# settings a resumed run may change: they do not change what is trained (``time_budget``
# rewrites ``epochs``; ``select`` may change to ``last``, which re-picks a finished run's last
# epoch, see ``fit``)
RESUME_FREE = frozenset({"threads", "progress", "device", "eval_batch_size", "compile",
                         "compile_mode", "time_budget"})


def check_resumable(run_dir: Path, cfg: TrainConfig, extra: dict | None = None) -> None:
    """Refuse to resume ``run_dir`` with training settings other than those it recorded, or
    distilled from another teacher than it was (where ``extra``, the caller's config record,
    names one; a record without a teacher had none, or its caller's default).

    A resumed run that finished returns its summary, and an unfinished one continues its
    learning-rate schedule, so resuming with another learning rate or epoch count would
    silently report (or continue) a training made with the old settings: session 28's
    frontier reran a point with another pruning learning rate in the same folder and would
    have reused the old fine-tune under the new record. Settings in ``RESUME_FREE`` and those
    a run recorded before they existed are not compared."""
    saved_file = run_dir / "config.json"
    if not saved_file.is_file():
        return
    record = json.loads(saved_file.read_text())
    if extra and "teacher" in extra and record.get("teacher") != extra["teacher"]:
        # the teacher is no training setting, so the comparison below does not see it
        raise ValueError(f"{run_dir} was distilled from {record.get('teacher') or 'the default'}"
                         f", not {extra['teacher'] or 'the default'}: resume it with its own "
                         "teacher, or train into another folder")
    saved = record.get("train", {})
    free = (RESUME_FREE | ({"epochs"} if cfg.time_budget > 0 else set())
            | ({"select"} if cfg.select == "last" else set()))
    now = json.loads(json.dumps(asdict(cfg)))  # as recorded: tuples become lists
    changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(now)
               if k in saved and k not in free and saved[k] != now[k]]
    if changed:
        raise ValueError(f"{run_dir} was trained with other settings ({'; '.join(changed)}): "
                         "resume it with its own, or train into another folder")


def _say(cfg: TrainConfig, text: str) -> None:
    """A line above the progress bar, or to the ``rlcompress.train`` log when there is none."""
    if cfg.progress:
        tqdm.write(text)
    elif dist.is_main():
        log.info(text)


def compiled_runner(runner: nn.Module, model: nn.Module, loader: object, cfg: TrainConfig,
                    device: torch.device, epoch: int) -> nn.Module:
    """``torch.compile(runner)`` when one compiled training step (forward and backward on the
    first batch of ``epoch``) runs on a copy of ``model``; otherwise ``runner`` itself, with a
    warning. Compilation needs a C compiler and, on a GPU, Triton: a machine without them
    should still train, only slower."""
    try:
        loader.set_epoch(epoch)
        x, y = next(iter(loader))
        x, y = x.to(device), y.to(device)
        trial = torch.compile(copy.deepcopy(model).train(), mode=cfg.compile_mode)
        with autocast(device, cfg.precision):
            loss = F.cross_entropy(trial(x).float(), y)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as exc:  # inductor and its compilers raise many types
        warnings.warn(f"torch.compile failed, training eagerly ({exc.__class__.__name__}: "
                      f"{str(exc)[:300]})", stacklevel=2)
        return runner
    return torch.compile(runner, mode=cfg.compile_mode)


def _resume_state(path: Path, model: nn.Module,
                  opt: torch.optim.Optimizer) -> tuple[int, dict, float, int]:
    """Restore weights and optimizer from ``state.pt``: the next epoch, the best so far, the
    seconds spent and the epochs a time budget fixed (0: none yet). A damaged file is a
    CheckpointError."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_weights(model, state["model"])
        opt.load_state_dict(state["optimizer"])
        best = {"val_top1": float(state["best_val_top1"]), "epoch": int(state["best_epoch"])}
        planned = int(state.get("planned_epochs", 0))
        return int(state["epoch"]) + 1, best, float(state["seconds"]), planned
    except CheckpointError:
        raise
    except Exception as exc:  # torch/pickle raise many types on a damaged or foreign file
        raise CheckpointError(f"{path}: cannot resume from this file ({exc.__class__.__name__}: "
                              f"{str(exc)[:200]}); delete it to restart the run") from exc


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    """Write ``summary.json``, marking the run as finished."""
    path = Path(run_dir) / "summary.json"
    write_json(path, summary)
    return path
