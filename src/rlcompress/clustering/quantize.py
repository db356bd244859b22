"""Cluster a model with everything a :class:`ShareConfig` asks for, given data.

Sensitive methods need Fisher importances from training images and batch-norm re-estimation
needs augmented training images, so this is the one place where clustering meets data; the
share job, the library's ``compress`` and the benchmarks all go through it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from rlcompress.clustering.qat import qat_layers, qat_model, qat_taus
from rlcompress.clustering.sensitivity import fisher_importance
from rlcompress.clustering.sharing import (
    ClusterCache,
    ShareConfig,
    layout_of,
    share_model,
    shared_layers,
)
from rlcompress.data import ImageData
from rlcompress.data.loaders import LoaderData
from rlcompress.engine.batches import calibration_batches, evaluate_model
from rlcompress.engine.bn import (
    BNReference,
    bn_reference,
    recalibrate_bn,
    restore_running_stats,
    running_stats,
)
from rlcompress.engine.runtime import pick_device


def sharing_layout(model: nn.Module) -> dict[str, int | list[int]]:
    """Codebook size per shared or QAT layer (what a checkpoint spec needs to rebuild it):
    k, or [blocks, k] for grouped codebooks."""
    return {n: layout_of(m) for n, m in {**shared_layers(model), **qat_layers(model)}.items()}


def sharing_spec(model: nn.Module) -> dict:
    """Spec entries that rebuild ``model``'s shared or QAT layers when a checkpoint loads:
    ``sharing`` (codebook sizes) and, during trained quantization, ``qat`` (``{"tau": {layer:
    temperature}}`` when DKM's soft forward trains them)."""
    if not qat_layers(model):
        return {"sharing": sharing_layout(model)}
    taus = qat_taus(model)
    return {"sharing": sharing_layout(model), "qat": {"tau": taus} if taus else True}


def bn_calibration(
    model: nn.Module,
    data: ImageData | LoaderData,
    cfg: ShareConfig,
    precision: str = "fp32",
    device: torch.device | str = "cpu",
) -> tuple[list, BNReference | None]:
    """The training batches batch norm is re-estimated on after clustering (``cfg.bn_images``)
    and, in ``shift`` mode, the uncompressed ``model``'s reference statistics over them
    (``None`` in ``replace`` mode or without batches); ``model`` is left unchanged."""
    batches = calibration_batches(data, cfg.bn_images, seed=cfg.kmeans_seed + 1)
    reference = bn_reference(model, batches, device, precision) \
        if batches and cfg.bn_mode == "shift" else None
    return batches, reference


def quantize(
    model: nn.Module,
    ks: dict[str, int],
    data: ImageData | LoaderData,
    cfg: ShareConfig | None = None,
    trainable: bool = False,
    cache: ClusterCache | None = None,
    precision: str = "fp32",
) -> dict:
    """Cluster ``model``'s layers in place with everything ``cfg`` asks for: Fisher importances
    for the sensitive methods, shared layers (or QAT layers with ``trainable`` and
    ``cfg.finetune == "qat"``), then batch-norm re-estimation. Returns timings."""
    cfg = cfg or ShareConfig()
    t0 = time.perf_counter()
    importance = None
    if cfg.weighted:
        batches = calibration_batches(data, cfg.calibration_images, seed=cfg.kmeans_seed)
        importance = fisher_importance(model, batches, list(ks))
    bn_batches, reference = bn_calibration(model, data, cfg, precision)
    t1 = time.perf_counter()
    if trainable and cfg.finetune == "qat":
        qat_model(model, ks, cfg, cache, importance)
    else:
        share_model(model, ks, cfg, cache, importance)
    t2 = time.perf_counter()
    recalibrate_bn(model, bn_batches, precision=precision, reference=reference)
    return {"fisher_s": round(t1 - t0, 2), "cluster_s": round(t2 - t1, 2),
            "bn_s": round(time.perf_counter() - t2, 2)}


def hard_bn_hook(
    model: nn.Module,
    uncompressed: nn.Module,
    data: ImageData | LoaderData,
    cfg: ShareConfig,
    precision: str = "fp32",
    device: str = "auto",
) -> Callable[..., dict] | None:
    """For a model in DKM trained quantization (``cfg.dkm_tau > 0`` and ``cfg.dkm_bn``): a
    hook for :func:`rlcompress.engine.fit`'s ``eval_hooks`` that re-estimates batch norm for
    the hard weights evaluation uses (as :func:`quantize` does, with ``uncompressed`` as the
    reference of the ``shift`` mode) and keeps the re-estimated statistics only where they
    score higher on the validation split. ``None`` when the model trains on the weights it
    evaluates (no soft QAT layer) or ``cfg`` asks for no re-estimation.

    DKM's training forward uses soft weights, so the running statistics an epoch leaves
    describe activations that evaluation never produces; a deep network at one bit per weight
    can validate near chance with them and well with re-estimated ones."""
    if not (cfg.dkm_bn and qat_taus(model)) or cfg.bn_images == 0:
        return None
    dev = pick_device(device)
    batches, reference = bn_calibration(uncompressed.to(dev), data, cfg, precision, dev)

    def hook(net: nn.Module, validate: Callable[[], dict] | None = None) -> dict:
        validate = validate or (lambda: evaluate_model(net, data, "val", precision, device))
        trained, saved = validate(), running_stats(net)
        recalibrate_bn(net, batches, dev, precision, reference)
        estimated = validate()
        if estimated["top1"] <= trained["top1"]:
            restore_running_stats(net, saved)
            return trained
        return estimated

    return hook
