"""Batch norms stored as inference scale and shift (``compact_bn``): smaller, same outputs."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from rlcompress.clustering import clusterable_layers, share_model
from rlcompress.codec import load_compressed, save_compressed
from rlcompress.codec.format import CodecError, _digest, compactable_bn
from rlcompress.models import build_model, model_spec


def _shared(seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("resnet20", num_classes=4)
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    share_model(model, {n: 8 for n in clusterable_layers(model)})
    return model.eval()


def test_compact_file_is_smaller_and_computes_the_same(tmp_path: Path):
    model = _shared()
    spec = model_spec("resnet20", num_classes=4)
    save_compressed(model, spec, tmp_path / "full.rlc")
    manifest = save_compressed(model, spec, tmp_path / "compact.rlc", compact_bn=True)
    channels = sum(m.num_features for m in compactable_bn(model).values())
    saved = (tmp_path / "full.rlc").stat().st_size - (tmp_path / "compact.rlc").stat().st_size
    assert saved >= 8 * channels - 1024  # two float32 values per channel, less the name list
    full, _ = load_compressed(tmp_path / "full.rlc")
    compact, _ = load_compressed(tmp_path / "compact.rlc")
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        a, b = full(x), compact(x)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    bn = compact.bn1
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert torch.equal(bn.running_var + bn.eps, torch.ones_like(bn.running_var))
    assert manifest["extra"] == {}


def test_unknown_compact_entry_is_refused(tmp_path: Path):
    model = _shared()
    save_compressed(model, model_spec("resnet20", num_classes=4), tmp_path / "m.rlc",
                    compact_bn=True)
    tensors = load_file(tmp_path / "m.rlc")
    manifest = json.loads(zlib.decompress(tensors["m"].tobytes()))
    manifest["bn"] = [*manifest["bn"][:-1], "layer1.0.conv1"]  # a conv, not a batch norm
    tensors["m"] = np.frombuffer(zlib.compress(json.dumps(manifest).encode()), np.uint8)
    save_file(tensors, tmp_path / "bad.rlc", metadata={"format": "rlcompress", "version": "2",
                                                      "sha256": _digest(tensors)})
    with pytest.raises(CodecError, match="not affine batch norms"):
        load_compressed(tmp_path / "bad.rlc")


def test_search_budget_counts_compact_batch_norms():
    from rlcompress.clustering import ShareConfig
    from rlcompress.search import SearchConfig, make_budget

    model = build_model("resnet20", num_classes=4).eval()
    spec = model_spec("resnet20", num_classes=4)
    names = list(clusterable_layers(model))
    full = make_budget(model, spec, names, SearchConfig(target_size="60KB"), ShareConfig())
    compact = make_budget(model, spec, names, SearchConfig(target_size="60KB", compact_bn=True),
                          ShareConfig())
    channels = sum(m.num_features for m in compactable_bn(model).values())
    assert full.fixed - compact.fixed >= 8 * channels - 1024
