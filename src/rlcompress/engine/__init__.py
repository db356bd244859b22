"""Training and evaluation engine: resumable runs, bf16/channels_last on CPU, AMP on CUDA."""

from rlcompress.engine.batches import calibration_batches, evaluate_model, split_loader
from rlcompress.engine.bn import recalibrate_bn
from rlcompress.engine.evaluate import evaluate
from rlcompress.engine.runtime import autocast, pick_device, seed_everything, set_threads
from rlcompress.engine.train import (
    TrainConfig,
    fit,
    lr_at,
    make_loaders,
    short_finetune,
    write_summary,
)

__all__ = [
    "TrainConfig",
    "autocast",
    "calibration_batches",
    "evaluate",
    "evaluate_model",
    "fit",
    "lr_at",
    "make_loaders",
    "pick_device",
    "recalibrate_bn",
    "seed_everything",
    "set_threads",
    "short_finetune",
    "split_loader",
    "write_summary",
]
