"""Per-output-channel-group codebooks: clustering, trained quantization, file and budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import planted_data
from rlcompress.clustering import ShareConfig, clusterable_layers, share_model, shared_layers
from rlcompress.clustering.qat import freeze_qat, qat_layers, qat_model
from rlcompress.clustering.quantize import sharing_spec
from rlcompress.clustering.sharing import codebook_groups, layer_indices, row_blocks
from rlcompress.codec import load_compressed, save_compressed
from rlcompress.codec.format import CodecError
from rlcompress.engine import TrainConfig, fit
from rlcompress.models import build_model, load_checkpoint, model_spec, save_checkpoint
from rlcompress.pruning import FilterMasks, PruneConfig
from rlcompress.search.budget import file_budget

GROUPED = ShareConfig(method="exact", bn_images=0, group_size=4)


def _model(pruned: bool = True):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=4)
    if pruned:
        FilterMasks.compute(model, PruneConfig(rate=0.5)).apply(model)
    return model


def test_blocks_cover_the_rows():
    assert codebook_groups(16, 0) == 1 and codebook_groups(16, 4) == 4 and codebook_groups(10, 4) == 3
    blocks = row_blocks(10, 3)
    assert [(b.start, b.stop) for b in blocks] == [(0, 4), (4, 7), (7, 10)]


def test_each_block_gets_its_own_codebook_and_never_a_worse_fit():
    w = _model().layer2[0].conv1.weight.detach()
    single, _ = layer_indices(w, 4, ShareConfig(method="exact", bn_images=0))
    grouped, idx = layer_indices(w, 4, GROUPED)
    groups = codebook_groups(w.shape[0], 4)
    assert grouped.codebook.shape == (groups, 4)
    alive = w.flatten(1).ne(0).any(1)
    for g, rows in enumerate(row_blocks(w.shape[0], groups)):
        block = idx[rows][alive[rows]]
        assert ((block >= g * 4) & (block < (g + 1) * 4)).all()
    assert (idx[~alive] == groups * 4).all()  # pruned filters: the sentinel
    assert grouped.sse <= single.sse + 1e-9  # k centroids per block refine k per layer


def test_grouped_file_is_bit_exact_and_pays_only_codebook_bytes(tmp_path: Path):
    ks = {n: 4 for n in clusterable_layers(_model())}
    plain, grouped = _model(), _model()
    share_model(plain, ks, ShareConfig(method="exact", bn_images=0))
    share_model(grouped, ks, GROUPED)
    arch = model_spec("resnet20", num_classes=4)
    manifest = save_compressed(grouped, arch, tmp_path / "g.rlc", encoding="packed")
    save_compressed(plain, arch, tmp_path / "p.rlc", encoding="packed")
    decoded, _ = load_compressed(tmp_path / "g.rlc")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(decoded.eval()(x), grouped.eval()(x))
    for name, m in shared_layers(grouped).items():
        d = dict(decoded.named_modules())[name]
        assert torch.equal(d.codebook, m.codebook) and torch.equal(d.indices, m.indices)
    extra_books = sum(4 * 4 * (m.codebook.shape[0] - 1) for m in shared_layers(grouped).values())
    grown = (tmp_path / "g.rlc").stat().st_size - (tmp_path / "p.rlc").stat().st_size
    assert 0 < grown <= extra_books + 64  # 2-bit indices either way; a few manifest bytes
    assert {r["codebooks"] for r in manifest["layers"]} > {1}


def test_grouped_checkpoint_round_trip(tmp_path: Path):
    model = _model()
    share_model(model, {n: 8 for n in clusterable_layers(model)}, GROUPED)
    spec = {**model_spec("resnet20", num_classes=4), **sharing_spec(model)}
    assert any(isinstance(v, list) for v in spec["sharing"].values())
    save_checkpoint(model, spec, tmp_path, "shared")
    again, _ = load_checkpoint(tmp_path / "shared.safetensors")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model.eval()(x))


def test_grouped_qat_stays_in_its_blocks_and_exports_exactly(tmp_path: Path):
    model = _model()
    layers = clusterable_layers(model)
    qat_model(model, {n: 4 for n in layers}, GROUPED)
    spec = {**model_spec("resnet20", num_classes=4), **sharing_spec(model)}
    data = planted_data(n_train=64, n_val=32)
    fit(model, spec, data, TrainConfig(epochs=1, batch_size=32, lr=0.05, precision="fp32",
                                       progress=False, select="last"), tmp_path / "run")
    for m in qat_layers(model).values():
        k, groups = m.codebook.shape[-1], m.codebook.numel() // m.codebook.shape[-1]
        for g, rows in enumerate(row_blocks(m.indices.shape[0], groups)):
            block = m.indices[rows][m.qmask[rows]]
            assert ((block >= g * k) & (block < (g + 1) * k)).all()
        assert (m.indices[~m.qmask] == m.codebook.numel()).all()
    x = torch.randn(2, 3, 16, 16)
    model.eval().to(memory_format=torch.contiguous_format)  # fit trained channels_last
    with torch.no_grad():
        before = model(x)
    freeze_qat(model)
    save_compressed(model, model_spec("resnet20", num_classes=4), tmp_path / "q.rlc")
    decoded, _ = load_compressed(tmp_path / "q.rlc")
    with torch.no_grad():
        assert torch.equal(decoded.eval()(x), before)


def test_file_budget_charges_every_codebook():
    plain = file_budget([1000, 1000], 0, 10_000)
    grouped = file_budget([1000, 1000], 0, 10_000, groups=[1, 8])
    assert grouped.cost(1, 16) - plain.cost(1, 16) == 7 * 4 * 16
    assert grouped.cost(0, 16) == plain.cost(0, 16)


def test_a_record_claiming_more_codebooks_than_channels_is_refused(tmp_path: Path):
    import json
    import zlib

    from safetensors.numpy import load_file, save_file

    from rlcompress.codec.format import _digest

    model = _model(pruned=False)
    share_model(model, {"linear": 4}, ShareConfig(method="exact", bn_images=0, group_size=1))
    save_compressed(model, model_spec("resnet20", num_classes=4), tmp_path / "m.rlc")
    tensors = load_file(tmp_path / "m.rlc")
    manifest = json.loads(zlib.decompress(tensors["m"].tobytes()))
    rec = manifest["layers"][0]
    assert rec[6] == 4  # the 4-class classifier: one codebook per output row
    # keep the book span consistent but claim more blocks than rows
    rec[1], rec[6] = 2, 8
    tensors["m"] = np.frombuffer(zlib.compress(json.dumps(manifest).encode()), np.uint8)
    save_file(tensors, tmp_path / "bad.rlc", metadata={"format": "rlcompress", "version": "2",
                                                      "sha256": _digest(tensors)})
    with pytest.raises(CodecError):
        load_compressed(tmp_path / "bad.rlc")


def test_grouped_layers_export_to_onnx_with_flattened_codebooks(tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from rlcompress.deploy.onnx_export import export_onnx, onnx_session, run_onnx

    model = _model(pruned=False).eval()
    share_model(model, {n: 4 for n in clusterable_layers(model)}, GROUPED)
    info = export_onnx(model, tmp_path / "g.onnx", (3, 16, 16))
    # 16 channels in blocks of 4: 4 codebooks of 4 -> 16 flat entries -> 4 index bits
    assert info["index_bits"]["conv1"] == 4 and info["index_bits"]["linear"] == 2
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(run_onnx(onnx_session(tmp_path / "g.onnx"), x), model(x),
                              atol=1e-4, rtol=1e-4)
