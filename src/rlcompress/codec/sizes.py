"""Compression ratios, counted the paper's way and by real bytes on disk."""

from __future__ import annotations

from safetensors.torch import save as st_save
from torch import nn

from rlcompress.clustering.sharing import CLUSTERABLE, is_shared, kept_weight_count


def layer_weight_count(model: nn.Module) -> int:
    """Weights of all conv (1-3d) and Linear layers (what the paper's ratio counts)."""
    total = 0
    for m in model.modules():
        if isinstance(m, CLUSTERABLE):
            total += m.indices.numel() if is_shared(m) else m.weight.numel()
    return total


def paper_ratio(dense_weights: int, layers: list[tuple[int, int]]) -> float:
    """32 x dense weights / sum of (kept weights x bits per weight) over the layers.

    ``layers`` lists (kept weights, bits) for every conv/linear layer; a layer left in float
    counts 32 bits per weight. Codebooks, batch norm and headers are left out, as in the paper.
    """
    stored = sum(n * b for n, b in layers)
    if stored <= 0:
        raise ValueError("no stored weights")
    return 32.0 * dense_weights / stored


def model_layer_bits(model: nn.Module) -> list[tuple[int, int]]:
    """(kept weights, bits) per conv/linear layer of a possibly shared model."""
    from rlcompress.codec.bits import bits_for

    out = []
    for m in model.modules():
        if isinstance(m, CLUSTERABLE):
            bits = bits_for(m.codebook.shape[-1]) if is_shared(m) else 32
            out.append((kept_weight_count(m), bits))
    return out


def float_state_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state_dict saved as a float32 safetensors file."""
    state = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()
             if v.is_floating_point()}
    return len(st_save(state))


def reference_sizes(spec: dict, model: nn.Module) -> dict[str, int]:
    """Weights and float32 file bytes of the *unpruned* model a compressed one came from.

    Taken from ``spec["origin"]`` (written by pruning), else rebuilt from a CIFAR ResNet spec's
    depth, else counted on ``model`` itself (then assumed unpruned).
    """
    if "origin" in spec:
        return {"weights": int(spec["origin"]["weights"]),
                "state_bytes": int(spec["origin"]["state_bytes"])}
    from rlcompress.models import build_model
    from rlcompress.models.resnet_cifar import ARCH, resnet_spec

    if spec.get("arch") == ARCH and "depth" in spec:
        dense = build_model(resnet_spec(spec["depth"], spec["num_classes"],
                                        in_channels=spec.get("in_channels", 3)))
    else:
        dense = model
    return {"weights": layer_weight_count(dense), "state_bytes": float_state_bytes(dense)}


def size_report(model: nn.Module, spec: dict, file_bytes: int) -> dict:
    """Both ratios and the bits per weight of a (shared) model stored in ``file_bytes``."""
    ref = reference_sizes(spec, model)
    layers = model_layer_bits(model)
    kept = sum(n for n, _ in layers)
    return {
        "paper_ratio": round(paper_ratio(ref["weights"], layers), 3),
        "file_ratio": round(ref["state_bytes"] / file_bytes, 3),
        "file_bytes": int(file_bytes),
        "dense_file_bytes": ref["state_bytes"],
        "weights_dense": ref["weights"],
        "weights_kept": kept,
        "index_bits_per_weight": round(sum(n * b for n, b in layers) / kept, 3),
    }
