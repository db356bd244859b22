"""Models: the CIFAR ResNet family, a spec-driven registry and checkpoint I/O."""

from rlcompress.models.registry import (
    ARCHS,
    MODEL_SPECS,
    CheckpointError,
    build_model,
    load_checkpoint,
    load_pretrained,
    load_state_dict_file,
    load_weights,
    model_spec,
    register_arch,
    save_checkpoint,
    weights_digest,
)
from rlcompress.models.resnet_cifar import ChannelMapShortcut, CifarResNet, resnet_spec
from rlcompress.models.shapes import apply_layer_shapes, set_module

__all__ = [
    "ARCHS",
    "MODEL_SPECS",
    "apply_layer_shapes",
    "set_module",
    "ChannelMapShortcut",
    "CheckpointError",
    "CifarResNet",
    "build_model",
    "load_checkpoint",
    "load_pretrained",
    "load_state_dict_file",
    "load_weights",
    "model_spec",
    "register_arch",
    "resnet_spec",
    "save_checkpoint",
    "weights_digest",
]
