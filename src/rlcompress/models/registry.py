"""A small registry of model builders and checkpoint I/O (state_dict + JSON spec, never pickles)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from rlcompress.fileio import atomic_path, write_json
from rlcompress.models.resnet_cifar import ARCH, CifarResNet, resnet_spec

# name -> function returning an architecture spec
MODEL_SPECS: dict[str, Callable[..., dict]] = {
    f"resnet{d}": (lambda d=d, **kw: resnet_spec(d, **kw)) for d in (20, 32, 44, 56, 110)
}
# spec["arch"] -> class that builds a module from a spec
ARCHS: dict[str, Callable[[dict], nn.Module]] = {ARCH: CifarResNet}


class CheckpointError(ValueError):
    """Raised when a checkpoint cannot be matched to a model."""


def register_arch(name: str, builder: Callable[[dict], nn.Module]) -> None:
    """Make ``build_model`` understand specs whose ``arch`` is ``name``."""
    ARCHS[name] = builder


def model_spec(name: str, **kwargs: object) -> dict:
    """The architecture spec of a registered model name (e.g. ``resnet20``)."""
    if name not in MODEL_SPECS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(MODEL_SPECS)}")
    return MODEL_SPECS[name](**kwargs)


def build_model(spec_or_name: dict | str, **kwargs: object) -> nn.Module:
    """Build a model from a spec dict or a registered name."""
    spec = model_spec(spec_or_name, **kwargs) if isinstance(spec_or_name, str) else spec_or_name
    arch = spec.get("arch")
    if arch not in ARCHS:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHS)}")
    return ARCHS[arch](spec)


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str = "module.") -> dict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``.safetensors`` or a torch file (``weights_only=True``).

    Accepts akamaster-style ``{"state_dict": ..., ...}`` wrappers and ``module.`` prefixes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for bad files
            raise CheckpointError(f"{path}: cannot load as a weights-only torch file ({exc})") from exc
        state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: no state_dict found in the file")
    return _strip_prefix(state)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], strict: bool = True) -> nn.Module:
    """Load a state_dict, explaining missing, unexpected and mis-shaped keys clearly."""
    own = model.state_dict()
    # BatchNorm's counter is absent from older checkpoints and irrelevant to inference
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if strict and (missing or unexpected or shapes):
        raise CheckpointError(
            "checkpoint does not match the model: "
            f"missing={missing[:5]} unexpected={unexpected[:5]} shape mismatches={shapes[:5]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model


# Spec keys whose layers a stage above this one rebuilds before a state_dict loads (weight
# sharing registers "sharing"), so that models never imports a layer above its own.
SPEC_HOOKS: dict[str, Callable[[nn.Module, dict], None]] = {}


def register_spec_hook(key: str, hook: Callable[[nn.Module, dict], None]) -> None:
    """Make :func:`load_checkpoint` call ``hook(model, spec)`` when ``spec[key]`` is set."""
    SPEC_HOOKS[key] = hook


def weights_digest(model: nn.Module) -> str:
    """A short digest of a model's parameters and buffers: which weights some work was made
    from (a run folder, a benchmark row)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        # as raw bytes, so that any dtype (bfloat16 has no NumPy type) hashes
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(model: nn.Module, spec: dict, directory: str | Path, name: str = "model") -> Path:
    """Write ``<name>.safetensors`` (weights) and ``<name>.json`` (architecture spec)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"{name}.safetensors"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, str(tmp))
    write_json((directory / f"{name}.json"), spec)
    return weights


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a model from ``X.safetensors`` + ``X.json`` (either path may be given)."""
    path = Path(path)
    stem = path.with_suffix("")
    spec_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    if not spec_path.is_file():
        raise CheckpointError(f"{spec_path}: architecture spec not found next to the weights")
    spec = json.loads(spec_path.read_text())
    model = build_model(spec)
    for key, hook in SPEC_HOOKS.items():
        if spec.get(key):
            hook(model, spec)
    if spec.get("sharing") and "sharing" not in SPEC_HOOKS:
        raise CheckpointError(f"{spec_path}: a weight-shared checkpoint; import rlcompress.clustering")
    load_weights(model, load_state_dict_file(weights_path))
    return model, spec


def load_pretrained(name: str, path: str | Path) -> tuple[nn.Module, dict]:
    """Build registered model ``name`` and load a checkpoint file (e.g. akamaster's ``.th``)."""
    spec = model_spec(name)
    model = build_model(spec)
    load_weights(model, load_state_dict_file(path))
    return model, spec
