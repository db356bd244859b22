"""ONNX export of decoded .rlc models, run through onnxruntime against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlcompress.clustering import ShareConfig, clusterable_layers, resolve_policy, share_model
from rlcompress.codec import load_compressed, save_compressed
from rlcompress.deploy import index_bits, pack_indices
from rlcompress.models import build_model, model_spec
from rlcompress.pruning import FilterMasks, PruneConfig

onnx = pytest.importorskip("onnx", reason="the [onnx] extra is not installed")
pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed")

from rlcompress.deploy import export_onnx, onnx_session, run_onnx  # noqa: E402


@pytest.mark.parametrize("bits", range(1, 17))
def test_pack_indices_layout(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, size=1000)
    words = pack_indices(values, bits)
    per = 64 // bits
    assert words.dtype == np.uint64 and len(words) == -(-1000 // per)
    mask = np.uint64(2**bits - 1)
    back = [(int(words[i // per]) >> ((i % per) * bits)) & int(mask) for i in range(1000)]
    assert back == values.tolist()
    assert index_bits(2**bits) == bits and index_bits(2**bits - 1) <= bits


def _rlc(tmp_path: Path, policy: str = "k4", pruned: bool = True) -> Path:
    torch.manual_seed(0)
    spec = model_spec("resnet20", num_classes=5)
    model = build_model(spec).eval()
    if pruned:
        FilterMasks.compute(model, PruneConfig(rate=0.4)).apply(model)
    for m in model.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    share_model(model, resolve_policy(policy, clusterable_layers(model)), ShareConfig(method="lloyd"))
    path = tmp_path / "m.rlc"
    save_compressed(model, spec, path)
    return path


@pytest.mark.parametrize("policy", ["k4", "k8", "/64"])
@pytest.mark.parametrize("palettized", [True, False])
def test_onnx_export_matches_the_decoded_file(tmp_path: Path, policy: str, palettized: bool):
    model, _ = load_compressed(_rlc(tmp_path, policy))
    model.eval()
    out = tmp_path / "m.onnx"
    report = export_onnx(model, out, (3, 16, 16), palettized=palettized)
    onnx.checker.check_model(onnx.load(str(out)))
    assert report["bytes"] == out.stat().st_size
    session = onnx_session(out)
    for batch in (1, 7):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            ref = model(x)
        assert torch.allclose(run_onnx(session, x), ref, atol=1e-4)
    graph = onnx.load(str(out)).graph
    packed = [i for i in graph.initializer if i.data_type == onnx.TensorProto.UINT64]
    if palettized:
        # every shared layer is stored as packed indices, none as a dense int64 tensor
        unpackers = [n for n in graph.node if n.op_type == "BitShift"]
        assert len(unpackers) == len(report["index_bits"]) == 20
        assert not [i for i in graph.initializer if i.data_type == onnx.TensorProto.INT64
                    and np.prod(i.dims) > 64]
    else:
        assert not packed and not report["index_bits"]


def test_palettized_onnx_is_much_smaller_than_dense(tmp_path: Path):
    model, _ = load_compressed(_rlc(tmp_path, "k4", pruned=False))
    pal = export_onnx(model, tmp_path / "p.onnx", (3, 16, 16), palettized=True)
    dense = export_onnx(model, tmp_path / "d.onnx", (3, 16, 16), palettized=False)
    assert set(pal["index_bits"].values()) == {2}
    assert pal["bytes"] < dense["bytes"] / 4


def test_a_compressed_user_conv1d_model_exports_to_onnx(tmp_path: Path):
    from torch.utils.data import DataLoader, TensorDataset

    import rlcompress
    from test_user_models import SignalNet

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 2, 12, generator=g), torch.arange(64) % 4
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    torch.manual_seed(0)
    _, report = rlcompress.compress(SignalNet(1), loader, loader, target_size="2KB",
                                    strategy="uniform", prune_epochs=0, share_epochs=0,
                                    val_images=32, out=tmp_path / "c", progress=False, threads=1)
    model = rlcompress.load(report["file"], model=SignalNet(1))
    out = export_onnx(model, tmp_path / "m.onnx", (2, 12))
    assert set(out["index_bits"]) == set(report["policy"])
    got = run_onnx(onnx_session(out["file"]), x[:8])
    np.testing.assert_allclose(got.numpy(), model(x[:8]).detach().numpy(), atol=1e-5)
    from rlcompress.cli import main  # the same from the command line, with the class named

    assert main(["export", report["file"], "--class", "test_user_models:SignalNet", "--class-args",
                 '{"dims": 1}', "--input-shape", "2", "12", "--format", "onnx", "--out",
                 str(tmp_path / "c.onnx")]) == 0
    got = run_onnx(onnx_session(tmp_path / "c.onnx"), x[:8])
    np.testing.assert_allclose(got.numpy(), model(x[:8]).detach().numpy(), atol=1e-5)


def test_palettized_export_needs_a_shared_model(tmp_path: Path):
    with pytest.raises(ValueError, match="weight-shared"):
        export_onnx(build_model("resnet20").eval(), tmp_path / "x.onnx", (3, 16, 16))


def test_cli_export_onnx_verifies_against_pytorch(image_tar: Path, tmp_path: Path, capsys):
    import json

    from rlcompress.cli import main

    torch.manual_seed(0)
    spec = model_spec("resnet20", num_classes=3)
    model = build_model(spec).eval()
    share_model(model, resolve_policy("k8", clusterable_layers(model)), ShareConfig(method="lloyd"))
    save_compressed(model, spec, tmp_path / "m.rlc")
    data = ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3"]
    for fmt in ("onnx", "onnx-dense"):
        assert main(["export", str(tmp_path / "m.rlc"), "--format", fmt, "--out",
                     str(tmp_path / f"{fmt}.onnx"), "--verify", *data]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["onnx_top1"] == report["torch_top1"] and report["max_logit_diff"] < 1e-4
        assert report["bytes"] == (tmp_path / f"{fmt}.onnx").stat().st_size


@pytest.mark.parametrize("policy,pruned", [("k4", False), ("k8", True)])
def test_coreml_export_reproduces_every_layer_exactly(tmp_path: Path, policy: str, pruned: bool):
    pytest.importorskip("coremltools", reason="the [coreml] extra is not installed")
    from rlcompress.deploy import export_coreml, verify_coreml

    model, _ = load_compressed(_rlc(tmp_path, policy, pruned=pruned))
    report = export_coreml(model, tmp_path / "m.mlpackage", (3, 16, 16))
    assert report["verified_layers"] == 20 and report["bytes"] > 0
    layers = report["layers"].values()
    if policy == "k4":
        assert {(v["distinct"], v["lut_bits"], v["padded"]) for v in layers} == {(4, 2, False)}
    else:
        # 8 centroids (3 bits, iOS 18), plus the zero of pruned filters: 9 values in 16 entries
        assert {(v["distinct"], v["lut_bits"], v["padded"]) for v in layers} == {
            (8, 3, False), (9, 4, True)}
    expected = {n: m.weight.detach().numpy() for n, m in
                {n: m for n, m in model.named_modules() if hasattr(m, "codebook")}.items()}
    verify_coreml(tmp_path / "m.mlpackage", expected)
    wrong = dict(expected)
    wrong["conv1"] = expected["conv1"] * 1.0000001 + 1e-7
    with pytest.raises(ValueError, match="conv1"):
        verify_coreml(tmp_path / "m.mlpackage", wrong)


def test_missing_extra_is_named(monkeypatch):
    import builtins

    from rlcompress.deploy.onnx_export import require

    real = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ImportError, match=r"pip install 'rlcompress\[onnx\]'"):
        require("onnxruntime", "onnx")
