"""Weight sharing: a layer's weight becomes ``codebook[indices]`` with a trainable codebook.

The indices stay fixed and the codebook is a Parameter, so autograd's indexing backward sums
the gradients of all weights that share a centroid into that centroid, which is exactly Deep
Compression's trained quantization. Pruned positions (whole zero filters of a masked model, or
an explicit mask) point at an extra constant zero, so they stay zero while training. Biases
and batch norm stay in float.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcompress.checks import check_fields
from rlcompress.clustering.kmeans import METHODS, Clustering, cluster_1d
from rlcompress.dist import shard
from rlcompress.fileio import atomic_path
from rlcompress.models.shapes import PLAIN_CONVS

# every layer whose weight is a plain (out, in, *kernel) or (out, in) tensor; transposed convs
# store (in, out, ...) and stay float
CLUSTERABLE = (*PLAIN_CONVS, nn.Linear)


@dataclass
class ShareConfig:
    """How layers are clustered and how the shared model is trained.

    Attributes:
        method: clustering method: ``sensitive`` (optimal Fisher-weighted 1-D k-means),
            ``sensitive-lloyd`` (Fisher-weighted Lloyd), ``exact`` (optimal unweighted) or
            ``lloyd`` (unweighted Lloyd, Deep Compression's).
        kmeans_init: Lloyd's initialisation: ``kmeans++`` (default: within ~10% of the optimal
            squared error on ResNet layers), ``linear`` (Deep Compression's default; 2-3x the
            optimal error at k >= 64, since 1-D Lloyd cannot move centroids past each other)
            or ``density`` (quantiles).
        kmeans_seed: seed of the k-means++ initialisation.
        first: also cluster the first conv layer (the stem).
        last: also cluster the final linear layer.
        calibration_images: training images whose squared loss gradients give the sensitive
            methods their per-weight importance.
        bn_images: training images over which batch-norm running statistics are re-estimated
            after clustering (0: keep the uncompressed model's statistics).
        bn_mode: ``shift``: the uncompressed statistics moved by the change clustering causes
            on those images (robust to training augmentation the calibration does not repeat,
            such as Cutout); ``replace``: the statistics of those images.
        finetune: ``qat``: latent float weights trained through a nearest-centroid forward
            (straight-through), with the centroids re-fitted to their members and every weight
            re-assigned at each step; ``centroids``: fixed assignments, trainable centroids
            (the paper's and Deep Compression's).
        dkm_tau: with ``finetune="qat"``, > 0 trains through DKM's soft assignment at this
            temperature (relative to the squared gap between a layer's adjacent starting
            centroids) instead of the hard straight-through forward; 0: hard. The default
            0.04 measured best on validation of 0.01 / 0.04 / 0.15 (ResNet-20, 2 bits, one
            epoch: 86.30 / 87.14 / 78.76%; hard 85.24%; ``benchmarks/peers.py``).
        dkm_bn: with ``dkm_tau > 0``: after every fine-tuning epoch, batch norm is also
            re-estimated (``bn_images``, ``bn_mode``) for the hard weights that evaluation and
            the file use, and whichever statistics score higher on validation are kept. The
            running statistics of a DKM epoch describe the soft training weights: ResNet-32
            at one bit per weight validated at 10.0% with them and 82.4% re-estimated, while
            on ResNet-20 the trained ones were as good or up to 1.1 points better
            (``benchmarks/dkm_bn.py``).
        group_size: output channels per codebook (coremltools' ``per_grouped_channel``): a
            layer of C output channels gets ceil(C / group_size) codebooks of k entries, one per
            contiguous block of channels (blocks as even as possible); 0: one per layer.
    """

    method: str = "sensitive"
    kmeans_init: str = "kmeans++"
    kmeans_seed: int = 0
    first: bool = True
    last: bool = True
    calibration_images: int = 1024
    bn_images: int = 2048
    bn_mode: str = "shift"
    finetune: str = "qat"
    group_size: int = 0
    dkm_tau: float = 0.04
    dkm_bn: bool = True

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("kmeans_seed", "calibration_images", "bn_images", "group_size",
                                  "dkm_tau"),
                     choices={"method": tuple(METHODS), "finetune": ("qat", "centroids"),
                              "bn_mode": ("shift", "replace")})
        if METHODS[self.method].weighted and self.calibration_images < 1:
            raise ValueError(f"method {self.method!r} needs calibration_images >= 1")

    @property
    def weighted(self) -> bool:
        """The method needs per-weight importances."""
        return METHODS[self.method].weighted


# what :func:`share_model` uses when given no config: the optimal method that needs no data
DATA_FREE = ShareConfig(method="exact", bn_images=0)
# the paper's (and Deep Compression's) sharing: unweighted Lloyd, no batch-norm re-estimation,
# fixed assignments with trainable centroids; the reproduced paper tables use it
PAPER = ShareConfig(method="lloyd", bn_images=0, finetune="centroids")


def clusterable_layers(model: nn.Module, first: bool = True, last: bool = True) -> dict[str, nn.Module]:
    """Conv (1-3d) and Linear layers in definition order, optionally without the first / last one."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, CLUSTERABLE)}
    names = list(layers)
    if not names:
        raise ValueError("the model has no conv or Linear layer to cluster")
    if not first:
        layers.pop(names[0], None)
    if not last and len(names) > 1:
        layers.pop(names[-1], None)
    return layers


def surviving_mask(weight: torch.Tensor) -> torch.Tensor:
    """True for weights of filters that are not entirely zero (pruned filters are excluded)."""
    alive = weight.detach().flatten(1).ne(0).any(dim=1)
    return alive.view(-1, *([1] * (weight.dim() - 1))).expand_as(weight)


def _weight(module: nn.Module) -> torch.Tensor:
    return module.weight if "weight" in module._parameters else shared_weight(module)


def kept_weight_count(module: nn.Module) -> int:
    """Number of weights of a layer that survive pruning."""
    return int(surviving_mask(_weight(module)).sum())


class ClusterCache:
    """Clusterings keyed by (layer, k, method, init, seed, digest of the weights).

    The search asks for the same (layer, k) many times, so results are kept in memory and,
    with ``path``, in ``.npz`` files (read back with ``allow_pickle=False``).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.memory: dict[tuple, Clustering] = {}
        self.path = Path(path) if path else None
        self.hits = self.misses = 0

    def get(self, name: str, values: np.ndarray, k: int, cfg: ShareConfig,
            weights: np.ndarray | None = None) -> Clustering:
        """The clustering of ``values`` (with importances ``weights``) into ``k`` clusters,
        computed once."""
        weights = weights if cfg.weighted else None
        h = hashlib.sha1(np.ascontiguousarray(values).tobytes())
        if weights is not None:
            h.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
        digest = h.hexdigest()[:16]
        key = (name, k, cfg.method, cfg.kmeans_init, cfg.kmeans_seed, digest)
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        file = self.path / f"{'-'.join(map(str, key)).replace('/', '_')}.npz" if self.path else None
        result = None
        if file is not None and file.is_file():
            with np.load(file, allow_pickle=False) as z:
                result = Clustering(z["codebook"], z["labels"], float(z["sse"]))
            # a file written before weighted k-means re-seeded ckwrap's empty clusters may
            # hold NaN centres: computed again below, and overwritten
            result = result if np.isfinite(result.codebook).all() else None
            self.hits += result is not None
        if result is None:
            self.misses += 1
            result = cluster_1d(values, k, cfg.method, cfg.kmeans_init, cfg.kmeans_seed, weights)
            if file is not None:
                with atomic_path(file) as tmp, open(tmp, "wb") as f:
                    np.savez(f, codebook=result.codebook, labels=result.labels, sse=result.sse)
        self.memory[key] = result
        return result


def codebook_groups(rows: int, group_size: int) -> int:
    """Number of codebooks of a layer with ``rows`` output channels (1 when ``group_size`` is 0
    or covers every row)."""
    return 1 if group_size <= 0 else max(1, -(-rows // group_size))


def row_blocks(rows: int, groups: int) -> list[slice]:
    """The contiguous output-channel blocks of ``groups`` codebooks (sizes differ by at most
    one, earlier blocks larger): derived from the codebook's shape alone, so files and
    checkpoints need not store it. The same split as a rank's share of a batch."""
    return [shard(rows, g, groups) for g in range(groups)]


def flat_codebook(module: nn.Module) -> torch.Tensor:
    """All centroids of a layer in one vector; a layer's ``indices`` point into it (block g's
    centroids at g*k .. g*k+k-1) and ``numel`` of it marks a pruned (zero) position."""
    return module.codebook.reshape(-1)


def shared_weight(module: nn.Module) -> torch.Tensor:
    """The weight a shared layer computes: ``codebook[indices]``, zero at pruned positions."""
    book = flat_codebook(module)
    return torch.cat([book, book.new_zeros(1)])[module.indices]


def _pre_hook(module: nn.Module, _inputs: tuple) -> None:
    module.weight = shared_weight(module)


def _post_hook(module: nn.Module, _inputs: tuple, _output: object) -> None:
    # outside forward the attribute holds a detached copy: a graph-connected tensor attribute
    # would make the model impossible to deepcopy and keep the last graph alive
    module.weight = module.weight.detach()


def _refresh_after_load(module: nn.Module, _incompatible: object) -> None:
    # the ``weight`` attribute is a computed copy: after a state_dict load it must show the
    # loaded codebook and indices, not the placeholders it was built with
    with torch.no_grad():
        module.weight = shared_weight(module).detach()


def make_shared(module: nn.Module, codebook: torch.Tensor, indices: torch.Tensor) -> nn.Module:
    """Turn a conv (1-3d) or Linear layer into a shared layer in place.

    ``codebook`` is 1-D (k centroids) or 2-D (one row of k per block of output channels, see
    :func:`row_blocks`); ``indices`` has the weight's shape and points into the flattened
    codebook; the value ``codebook.numel()`` marks a pruned (zero) position.
    """
    if not isinstance(module, CLUSTERABLE):
        raise TypeError(f"only conv (1-3d) and Linear layers can share weights, got {type(module)}")
    if is_shared(module):
        raise ValueError("layer is already shared")
    shape = module.weight.shape
    if tuple(indices.shape) != tuple(shape):
        raise ValueError(f"indices shape {tuple(indices.shape)} != weight shape {tuple(shape)}")
    if codebook.dim() not in (1, 2) or (codebook.dim() == 2 and codebook.shape[0] > shape[0]):
        raise ValueError(f"codebook of shape {tuple(codebook.shape)} does not fit a layer of "
                         f"{shape[0]} output channels")
    # a frozen layer (requires_grad=False) stays frozen through every fine-tuning
    trainable = module._parameters.pop("weight").requires_grad
    module.register_parameter("codebook", nn.Parameter(codebook.detach().float().clone(),
                                                       requires_grad=trainable))
    module.register_buffer("indices", indices.to(torch.long))
    module.register_forward_pre_hook(_pre_hook)
    module.register_forward_hook(_post_hook)
    module.register_load_state_dict_post_hook(_refresh_after_load)
    module.weight = shared_weight(module).detach()
    return module


def is_shared(module: nn.Module) -> bool:
    """True when ``module`` computes its weight from a codebook."""
    return "codebook" in module._parameters


def cluster_layer(
    weight: torch.Tensor, k: int, cfg: ShareConfig, cache: ClusterCache | None = None,
    name: str = "", importance: torch.Tensor | None = None,
) -> tuple[Clustering, torch.Tensor]:
    """Cluster the surviving weights of one weight tensor; returns the result and the mask."""
    w = weight.detach().float().cpu()
    mask = surviving_mask(w)
    values = w[mask].numpy().astype(np.float64)
    weights = None
    if cfg.weighted:
        if importance is None:
            raise ValueError(f"clustering method {cfg.method!r} needs the importance of layer "
                             f"{name or '?'} (see rlcompress.clustering.fisher_importance)")
        weights = importance.detach().float().cpu()[mask].numpy().astype(np.float64)
        if not (weights > 0).any():
            # no weight of the layer moves the loss (an unused layer, or every unit dead):
            # nothing to steer the centroids, so plain k-means (equal weights)
            weights = np.ones_like(weights)
    return (cache or ClusterCache()).get(name, values, k, cfg, weights), mask


def layer_indices(
    weight: torch.Tensor, k: int, cfg: ShareConfig, cache: ClusterCache | None = None,
    name: str = "", importance: torch.Tensor | None = None,
) -> tuple[Clustering, torch.Tensor]:
    """:func:`cluster_layer` plus the weight-shaped index tensor a shared or QAT layer stores
    (``codebook.numel()`` at pruned positions). With ``cfg.group_size`` each block of output
    channels is clustered on its own and the codebook is 2-D (blocks x k)."""
    groups = codebook_groups(weight.shape[0], cfg.group_size)
    if groups == 1:
        result, mask = cluster_layer(weight, k, cfg, cache, name, importance)
        indices = torch.full(weight.shape, len(result.codebook), dtype=torch.long)
        indices[mask] = torch.from_numpy(result.labels)
        return result, indices
    books, sse = np.zeros((groups, k)), 0.0
    indices = torch.full(weight.shape, groups * k, dtype=torch.long)
    for g, rows in enumerate(row_blocks(weight.shape[0], groups)):
        if not surviving_mask(weight[rows]).any():
            continue  # every filter of the block pruned: its codebook is never read
        imp = importance[rows] if importance is not None else None
        res, mask = cluster_layer(weight[rows], k, cfg, cache, f"{name}@{g}", imp)
        # fewer distinct values than k: repeat the last centroid so every block has k
        books[g] = np.concatenate([res.codebook, np.repeat(res.codebook[-1:], k - len(res.codebook))])
        block = indices[rows]
        block[mask] = torch.from_numpy(res.labels) + g * k
        indices[rows] = block
        sse += res.sse
    return Clustering(books, indices[indices < groups * k].numpy(), sse), indices


def policy_modules(model: nn.Module, ks: dict[str, int]) -> dict[str, nn.Module]:
    """The modules a policy names; ``KeyError`` listing any the model does not have."""
    modules = dict(model.named_modules())
    unknown = [n for n in ks if n not in modules]
    if unknown:
        raise KeyError(f"policy names layers the model does not have: {unknown}")
    return {n: modules[n] for n in ks}


def share_layer(
    module: nn.Module, k: int, cfg: ShareConfig, cache: ClusterCache | None = None, name: str = "",
    importance: torch.Tensor | None = None,
) -> Clustering:
    """Cluster the surviving weights of one layer into ``k`` clusters and share them."""
    result, indices = layer_indices(module.weight, k, cfg, cache, name, importance)
    make_shared(module, torch.from_numpy(result.codebook), indices)
    return result


def share_model(
    model: nn.Module,
    ks: dict[str, int],
    cfg: ShareConfig | None = None,
    cache: ClusterCache | None = None,
    importance: dict[str, torch.Tensor] | None = None,
) -> dict[str, Clustering]:
    """Share the weights of every layer named in ``ks`` with its k (in place).

    Sensitive methods need ``importance`` (from :func:`fisher_importance`) for every layer;
    without ``cfg``, the optimal unweighted method (:data:`DATA_FREE`) is used. Batch-norm
    re-estimation needs data and is not done here (see ``rlcompress.clustering.quantize``).
    """
    cfg = cfg or DATA_FREE
    modules = policy_modules(model, ks)
    imp = importance or {}
    return {n: share_layer(modules[n], k, cfg, cache, n, imp.get(n)) for n, k in ks.items()}


@torch.no_grad()
def unshare(model: nn.Module) -> nn.Module:
    """Bake shared layers back into plain float weights (in place)."""
    for m in model.modules():
        if is_shared(m):
            w, trainable = shared_weight(m).detach().clone(), m.codebook.requires_grad
            remove_hooks(m, _pre_hook)
            del m._parameters["codebook"], m._buffers["indices"]
            m.__dict__.pop("weight", None)
            m.weight = nn.Parameter(w, requires_grad=trainable)
    return model


def remove_hooks(module: nn.Module, pre_hook: object) -> None:
    """Remove ``pre_hook``, the weight-detaching post-hook and the after-load refresh from a
    layer. Found by identity rather than by handle: a handle would not survive deepcopy."""
    for hooks, hook in ((module._forward_pre_hooks, pre_hook), (module._forward_hooks, _post_hook),
                        (module._load_state_dict_post_hooks, _refresh_after_load)):
        for key in [k for k, h in hooks.items() if h is hook]:
            del hooks[key]


def shared_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The shared layers of a model by name."""
    return {n: m for n, m in model.named_modules() if is_shared(m)}


def prepare_shared(model: nn.Module, layout: dict[str, int | list[int]]) -> nn.Module:
    """Make layers shared with placeholder codebooks of the given sizes, so that a state_dict
    of a shared model (codebooks + indices) can be loaded into a freshly built model."""
    modules = dict(model.named_modules())
    for name, size in layout.items():
        m = modules[name]
        make_shared(m, torch.zeros(size), torch.zeros(m.weight.shape, dtype=torch.long))
    return model


@torch.no_grad()
def share_palettized(model: nn.Module, max_k: int = 1 << 16) -> dict[str, int]:
    """Make every conv/Linear whose surviving weights take at most ``max_k`` distinct values
    (another tool's palettized output, e.g. coremltools') a shared layer whose codebook is
    exactly those values (in place), so it can be written as an ``.rlc`` file and measured on
    the same scale as ours. Returns k per converted layer; layers with more values stay float."""
    out = {}
    for name, m in clusterable_layers(model).items():
        if is_shared(m):
            continue
        w = m.weight.detach().float()
        mask = surviving_mask(w)
        values, inverse = torch.unique(w[mask], return_inverse=True)
        if not 1 <= len(values) <= max_k:
            continue
        indices = torch.full(w.shape, len(values), dtype=torch.long)
        indices[mask] = inverse
        make_shared(m, values, indices)
        out[name] = len(values)
    return out


def layout_of(module: nn.Module) -> int | list[int]:
    """A layer's codebook size as a spec stores it: k, or [blocks, k] for grouped codebooks."""
    shape = list(module.codebook.shape)
    return shape[0] if len(shape) == 1 else shape
