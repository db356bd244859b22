"""Trained quantization with cluster re-assignment (k-means quantization-aware training).

A QAT layer keeps a latent float weight. Each training forward (1) assigns every surviving
latent weight to its nearest centroid, (2) moves each centroid to the (importance-weighted)
mean of its members -- one Lloyd step, so the codebook tracks the weights as they train --
and (3) computes with ``codebook[indices]`` while the gradient passes straight through to the
latent weights. Unlike centroid-only training (the paper's), weights can change cluster, and
each latent weight gets its own gradient instead of a centroid receiving the sum of thousands.

In evaluation the layer uses the stored codebook and indices unchanged, so what is validated
is exactly what :func:`freeze_qat` turns into a shared layer and the codec stores. Pruned
positions (index ``codebook.numel()``) stay exactly zero throughout. Grouped codebooks (one
per block of output channels) are updated block by block.

With a temperature ``tau > 0`` the training forward is instead DKM's differentiable k-means
(Cho et al., 2021; coremltools' ``DKMPalettizer``): each weight is a softmax-weighted mix of
the centroids, softmax(-(w - c)^2 / tau), the centroids are a few soft Lloyd iterations on the
current weights, and the gradient flows through both. A weight deep inside its cluster then
receives its cluster's mean gradient (its members move together) and only weights near a
boundary can change cluster, which keeps 2-bit training from flipping assignments back and
forth. ``tau`` is relative to the mean squared gap between adjacent starting centroids, so one
value suits any k and layers and models of any scale. Evaluation uses the hard nearest-centroid assignment in both modes.
"""

from __future__ import annotations

import torch
from torch import nn

from rlcompress.clustering.kmeans import Clustering
from rlcompress.clustering.sharing import (
    CLUSTERABLE,
    ClusterCache,
    ShareConfig,
    _post_hook,
    _refresh_after_load,
    is_shared,
    layer_indices,
    make_shared,
    policy_modules,
    remove_hooks,
    row_blocks,
)


def is_qat(module: nn.Module) -> bool:
    """True when ``module`` is a quantization-aware-training layer."""
    return "latent" in module._parameters


@torch.no_grad()
def _assign(latent: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    mids = (codebook[1:] + codebook[:-1]) / 2
    return torch.bucketize(latent, mids)


@torch.no_grad()
def _lloyd_step(values: torch.Tensor, weights: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Assign ``values`` to the nearest of ``book``, move each centroid to its members'
    weighted mean, re-assign; updates ``book`` in place and returns the labels."""
    idx = _assign(values, book)
    wsum = torch.zeros_like(book).index_add_(0, idx, weights)
    total = torch.zeros_like(book).index_add_(0, idx, weights * values)
    # an emptied centroid keeps its place: it may win members back as weights move
    new = torch.where(wsum > 0, total / wsum.clamp_min(1e-30), book)
    book.copy_(torch.sort(new).values)
    return _assign(values, book)


@torch.no_grad()
def qat_step(module: nn.Module) -> None:
    """Re-assign the latent weights and move each centroid to its members' weighted mean (per
    block of output channels for grouped codebooks)."""
    latent = module.latent.detach().float()
    if module.codebook.dim() == 1:
        keep = module.qmask
        module.indices[keep] = _lloyd_step(latent[keep], module.importance[keep], module.codebook)
        return
    k = module.codebook.shape[1]
    for g, rows in enumerate(row_blocks(latent.shape[0], module.codebook.shape[0])):
        keep = module.qmask[rows]
        if not keep.any():
            continue
        labels = _lloyd_step(latent[rows][keep], module.importance[rows][keep], module.codebook[g])
        block = module.indices[rows]
        block[keep] = labels + g * k


def _soft_kmeans(w: torch.Tensor, book: torch.Tensor, tau: float,
                 iters: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """DKM's forward on one sorted codebook: ``iters`` soft Lloyd iterations from ``book``;
    returns the soft weights (differentiable in ``w``) and the final centroids.

    The attention softmax(-(w - c)^2 / tau) is taken over the two centroids that bracket each
    weight rather than all k (coremltools' ``topk`` mode, k = 2, in 1-D): the others carry
    e^-25 or less of the mass at the default temperature, and the full n x k attention costs
    1.1 s per step for a 36,864-weight layer at k = 256 (22 ms at k = 4) against O(n) here."""
    c = book.detach().float()
    k = c.numel()
    for _ in range(iters):
        hi = torch.bucketize(w.detach(), c).clamp(max=k - 1)
        lo = (hi - 1).clamp(min=0)
        d_lo, d_hi = (w - c[lo]).square(), (w - c[hi]).square()
        a_lo = torch.sigmoid((d_hi - d_lo) / tau)  # the two-way softmax
        a_hi = 1 - a_lo
        mass = torch.zeros_like(c).index_add(0, lo, a_lo).index_add(0, hi, a_hi)
        total = torch.zeros_like(c).index_add(0, lo, a_lo * w).index_add(0, hi, a_hi * w)
        # a centroid that attracts nothing keeps its place instead of becoming 0 / 0
        c = torch.where(mass > 1e-12, total / mass.clamp_min(1e-12), c)
    return a_lo * c[lo] + a_hi * c[hi], c


def _soft_weight(module: nn.Module) -> torch.Tensor:
    """The DKM training weight of a QAT layer; re-fits its codebook and hard indices to the
    soft centroids as a side effect (what evaluation then uses)."""
    latent, keep = module.latent, module.qmask
    books = module.codebook.view(-1, module.codebook.shape[-1])
    rows = row_blocks(latent.shape[0], books.shape[0])
    out = torch.zeros_like(latent)
    # fp32 throughout: under bf16 autocast the products would round the centroids
    with torch.autocast(latent.device.type, enabled=False):
        for g, block in enumerate(rows):
            sel = torch.zeros_like(keep)
            sel[block] = keep[block]
            if not sel.any():
                continue
            w = latent[sel].float()
            soft, c = _soft_kmeans(w, books[g], module.qat_tau)
            with torch.no_grad():
                c = torch.sort(c.detach()).values
                books[g].copy_(c)
                module.indices[sel] = _assign(w.detach(), c) + g * books.shape[1]
            out = out.masked_scatter(sel, soft)
    return out


def _qat_pre_hook(module: nn.Module, _inputs: tuple) -> None:
    training = module.training and torch.is_grad_enabled()
    if training and module.qat_tau > 0:
        module.weight = _soft_weight(module)
        return
    if training:
        qat_step(module)
    book = module.codebook.reshape(-1)
    quant = torch.cat([book, book.new_zeros(1)])[module.indices]
    latent = module.latent
    # value exactly codebook[indices]; gradient straight through to the latent weights
    module.weight = quant + (latent - latent.detach()) * module.qmask


def _temperature(codebook: torch.Tensor, tau: float) -> float:
    """``tau`` times the mean squared gap between adjacent centroids of the starting codebook:
    the same softness relative to the spacing at any k and weight scale (0: hard)."""
    book = torch.sort(codebook.detach().float().reshape(-1, codebook.shape[-1]), dim=1).values
    if tau <= 0 or book.shape[1] < 2:
        return 0.0
    return float(tau * book.diff(dim=1).square().mean().clamp_min(1e-12))


def make_qat(module: nn.Module, codebook: torch.Tensor, indices: torch.Tensor,
             importance: torch.Tensor | None = None, tau: float = 0.0) -> nn.Module:
    """Turn a conv (1-3d) or Linear layer into a QAT layer in place, starting from its float
    weights and a clustering (``codebook`` and ``indices`` as in :func:`make_shared`);
    ``tau > 0``: DKM's soft training forward at that temperature (relative to the mean squared
    gap between adjacent centroids of ``codebook``). A frozen layer's latent weights stay
    frozen."""
    if not isinstance(module, CLUSTERABLE) or is_shared(module) or is_qat(module):
        raise TypeError("make_qat needs a plain conv (1-3d) or Linear layer")
    weight = module._parameters.pop("weight")
    if tuple(indices.shape) != tuple(weight.shape):
        raise ValueError(f"indices shape {tuple(indices.shape)} != weight shape {tuple(weight.shape)}")
    module.register_parameter("latent", nn.Parameter(weight.detach().float().clone(),
                                                     requires_grad=weight.requires_grad))
    module.register_buffer("codebook", codebook.detach().float().clone())
    module.register_buffer("indices", indices.to(torch.long).clone())
    module.register_buffer("qmask", indices < codebook.numel())
    imp = torch.ones(weight.shape) if importance is None else importance.detach().float().clone()
    module.register_buffer("importance", imp)
    module.qat_tau = _temperature(module.codebook, tau)
    module.register_forward_pre_hook(_qat_pre_hook)
    module.register_forward_hook(_post_hook)
    module.register_load_state_dict_post_hook(_refresh_after_load)
    _refresh_after_load(module, None)
    return module


def prepare_qat(model: nn.Module, layout: dict[str, int | list[int]],
                taus: dict[str, float] | None = None) -> nn.Module:
    """Placeholder QAT layers of the given codebook sizes, so that a QAT checkpoint loads;
    ``taus``: each layer's absolute DKM temperature (:func:`qat_taus`; absent: hard)."""
    modules = dict(model.named_modules())
    for name, size in layout.items():
        m = modules[name]
        make_qat(m, torch.zeros(size), torch.zeros(m.weight.shape, dtype=torch.long))
        m.qat_tau = float((taus or {}).get(name, 0.0))
    return model


def qat_taus(model: nn.Module) -> dict[str, float]:
    """The absolute DKM temperature of every soft QAT layer (for a checkpoint's spec)."""
    return {n: m.qat_tau for n, m in qat_layers(model).items() if m.qat_tau > 0}


@torch.no_grad()
def freeze_qat(model: nn.Module) -> nn.Module:
    """Turn every QAT layer into a shared layer with its current codebook and indices (in
    place); the model computes exactly what it computed in evaluation mode."""
    for m in model.modules():
        if not is_qat(m):
            continue
        book, idx, trainable = m.codebook.clone(), m.indices.clone(), m.latent.requires_grad
        remove_hooks(m, _qat_pre_hook)
        for name in ("codebook", "indices", "qmask", "importance"):
            del m._buffers[name]
        del m._parameters["latent"]
        del m.qat_tau
        m.__dict__.pop("weight", None)
        m.weight = nn.Parameter(torch.zeros(idx.shape), requires_grad=trainable)
        make_shared(m, book, idx)
    return model


def qat_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The QAT layers of a model by name."""
    return {n: m for n, m in model.named_modules() if is_qat(m)}


def qat_model(
    model: nn.Module,
    ks: dict[str, int],
    cfg: ShareConfig | None = None,
    cache: ClusterCache | None = None,
    importance: dict[str, torch.Tensor] | None = None,
) -> dict[str, Clustering]:
    """Cluster every layer named in ``ks`` like :func:`share_model` and make it a QAT layer
    (in place), its latent weights starting from the float weights.

    The importances shape only the starting clustering: each training step's centroid update is
    an unweighted mean, since Fisher information is measured at the starting weights and goes
    stale as they move. Measured after one epoch on ResNet-20 (``benchmarks/peers.py``), the
    two are within one standard error of each other: 86.10% vs 85.80% at 2 bits, 87.60% vs
    87.80% at 3 bits (unweighted vs weighted updates); the simpler rule is kept."""
    cfg = cfg or ShareConfig()
    imp = importance or {}
    results = {}
    for name, m in policy_modules(model, ks).items():
        res, idx = layer_indices(m.weight, ks[name], cfg, cache, name, imp.get(name))
        make_qat(m, torch.from_numpy(res.codebook), idx, tau=cfg.dkm_tau)
        results[name] = res
    return results
