from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from rlcompress.clustering import (
    ClusterCache,
    ShareConfig,
    cluster_1d,
    clusterable_layers,
    exact_1d,
    lloyd_1d,
    resolve_policy,
    share_model,
    shared_layers,
    unshare,
)
from rlcompress.models import build_model
from rlcompress.pruning import FilterMasks, PruneConfig


def _brute_sse(x, book):
    return float(((x[:, None] - book[None, :]) ** 2).min(axis=1).sum())


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++"])
@pytest.mark.parametrize("k", [2, 5, 16])
def test_lloyd_assignment_is_nearest_and_sse_correct(init, k):
    x = np.random.default_rng(k).laplace(size=500) * 0.1
    res = lloyd_1d(x, k, init=init)
    assert len(res.codebook) == k and np.all(np.diff(res.codebook) > 0)
    book = res.codebook.astype(np.float64)
    nearest = np.abs(x[:, None] - book[None, :]).argmin(axis=1)
    assert np.array_equal(res.labels, nearest)
    assert res.sse == pytest.approx(_brute_sse(x, book), rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 400), k=st.integers(2, 40), seed=st.integers(0, 10_000))
def test_exact_never_worse_than_lloyd(n, k, seed):
    x = np.random.default_rng(seed).normal(size=n)
    for init in ("linear", "kmeans++"):
        assert exact_1d(x, k).sse <= lloyd_1d(x, k, init=init).sse * (1 + 1e-6) + 1e-9


def test_exact_is_optimal_on_tiny_inputs():
    # brute force over every split of 7 sorted values into 3 contiguous runs
    x = np.array([0.1, 0.15, 0.9, 1.0, 1.1, 3.0, 3.3])
    best = np.inf
    for a in range(1, 6):
        for b in range(a + 1, 7):
            runs = [x[:a], x[a:b], x[b:]]
            best = min(best, sum(((r - r.mean()) ** 2).sum() for r in runs))
    assert exact_1d(x, 3).sse == pytest.approx(best, rel=1e-5)


def test_few_distinct_values_and_errors():
    res = cluster_1d(np.array([1.0, 1.0, 2.0]), 8)
    assert len(res.codebook) == 2 and res.sse == 0
    with pytest.raises(ValueError, match="k must be"):
        cluster_1d(np.ones(4), 1)
    with pytest.raises(ValueError, match="NaN"):
        cluster_1d(np.array([1.0, np.nan]), 2)
    with pytest.raises(ValueError, match="method"):
        cluster_1d(np.ones(4), 2, method="magic")


def test_large_k_is_supported():
    x = np.random.default_rng(0).normal(size=70_000)
    res = cluster_1d(x, 65536)
    assert len(res.codebook) == 65536


def test_deterministic_for_a_seed():
    x = np.random.default_rng(0).normal(size=2000)
    a, b = lloyd_1d(x, 16, "kmeans++", seed=3), lloyd_1d(x, 16, "kmeans++", seed=3)
    assert np.array_equal(a.codebook, b.codebook) and np.array_equal(a.labels, b.labels)


def test_centroid_gradient_is_sum_of_member_gradients():
    torch.manual_seed(0)
    layer = nn.Conv2d(3, 4, 3)
    dense = nn.Conv2d(3, 4, 3)
    share_model(nn.Sequential(layer), {"0": 5})
    dense.weight.data.copy_(layer.weight.detach())
    dense.bias.data.copy_(layer.bias.detach())
    x = torch.randn(2, 3, 8, 8)
    dense(x).pow(2).sum().backward()
    layer(x).pow(2).sum().backward()
    expected = torch.zeros(5).index_add_(0, layer.indices.flatten(), dense.weight.grad.flatten())
    assert torch.allclose(layer.codebook.grad, expected, atol=1e-5)


def test_pruned_positions_stay_zero_through_training():
    torch.manual_seed(0)
    model = build_model("resnet20")
    masks = FilterMasks.compute(model, PruneConfig())
    masks.apply(model)
    layers = clusterable_layers(model)
    share_model(model, resolve_policy("k16", layers))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = model(torch.randn(2, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(torch.zeros(1, 3, 32, 32))
    mods = dict(model.named_modules())
    for name, keep in masks.keep.items():
        assert mods[name].weight[~keep].abs().sum() == 0
        assert mods[name].weight[keep].abs().sum() > 0
        assert len(mods[name].codebook) == 16


def test_policies():
    model = build_model("resnet20")
    layers = clusterable_layers(model)
    assert set(resolve_policy("k32", layers).values()) == {32}
    prop = resolve_policy("/16", layers)
    assert prop["layer3.2.conv2"] == 64 * 64 * 9 // 16
    assert prop["conv1"] == 16 * 27 // 16
    no_ends = clusterable_layers(model, first=False, last=False)
    assert "conv1" not in no_ends and "linear" not in no_ends and len(no_ends) == len(layers) - 2
    with pytest.raises(ValueError, match="unknown policy"):
        resolve_policy("fancy", layers)
    with pytest.raises(ValueError, match="does not match"):
        resolve_policy({"conv1": 4}, layers)
    for explicit in ("k0", "k1", "k70000"):  # an explicit k is checked, not clamped
        with pytest.raises(ValueError, match="k must be in"):
            resolve_policy(explicit, layers)
    with pytest.raises(ValueError, match="unknown policy"):
        resolve_policy("/0", layers)
    with pytest.raises(ValueError, match="k must be in"):
        resolve_policy(dict.fromkeys(layers, 1), layers)


def test_unshare_restores_plain_layers():
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    share_model(model, resolve_policy("k16", clusterable_layers(model)))
    x = torch.randn(2, 3, 32, 32)
    y = model(x)
    unshare(model)
    assert not shared_layers(model) and isinstance(model.conv1.weight, nn.Parameter)
    assert torch.equal(model(x), y)


def test_cache_hits_and_disk(tmp_path: Path):
    cache = ClusterCache(tmp_path / "c")
    x = np.random.default_rng(0).normal(size=300)
    cfg = ShareConfig(method="lloyd")
    a = cache.get("l", x, 8, cfg)
    b = cache.get("l", x, 8, cfg)
    assert a is b and cache.hits == 1 and cache.misses == 1
    fresh = ClusterCache(tmp_path / "c")
    c = fresh.get("l", x, 8, cfg)
    assert fresh.hits == 1 and np.array_equal(c.labels, a.labels)
    # a stale file with NaN centres (written before empty clusters were re-seeded) is redone
    (file,) = (tmp_path / "c").glob("*.npz")
    np.savez(file, codebook=np.full(8, np.nan), labels=a.labels, sse=a.sse)
    again = ClusterCache(tmp_path / "c")
    d = again.get("l", x, 8, cfg)
    assert again.misses == 1 and again.hits == 0 and np.array_equal(d.codebook, a.codebook)
    with np.load(file) as z:
        assert np.isfinite(z["codebook"]).all()


def test_share_job_end_to_end(image_tar: Path, tmp_path: Path, capsys):
    import json

    from rlcompress.cli import main
    from rlcompress.models import model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    data = ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3",
            "--precision", "fp32", "--quiet"]
    out = tmp_path / "s"
    assert main(["share", "--model", str(tmp_path / "dense.safetensors"), "--policy", "/16",
                 "--out", str(out), "--epochs", "1", "--batch-size", "4", *data]) == 0
    summary = json.loads(capsys.readouterr().out)
    for key in ("top1", "top5", "val_top1", "paper_ratio", "file_ratio", "file_bytes",
                "index_bits_per_weight", "k"):
        assert key in summary
    assert summary["file_bytes"] == (out / "model.rlc").stat().st_size
    assert summary["file_ratio"] > 1 and summary["paper_ratio"] > 1
    # the decoded file evaluates to the reported accuracy
    assert main(["evaluate", str(out / "model.rlc"), *data]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["top1"], abs=0.01)
    assert main(["inspect", str(out / "model.rlc")]) == 0
    assert "layer1.0.conv1" in capsys.readouterr().out
    assert main(["export", str(out / "finetune" / "best.safetensors"), "--out",
                 str(tmp_path / "again.rlc")]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["paper_ratio"] == summary["paper_ratio"]
    assert main(["evaluate", str(tmp_path / "again.rlc"), *data]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["top1"], abs=0.01)
    # a resumed finished run gives the same summary
    assert main(["share", "--model", str(tmp_path / "dense.safetensors"), "--policy", "/16",
                 "--out", str(out), "--epochs", "1", "--batch-size", "4", "--resume", *data]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == summary["top1"]


def test_share_distils_from_a_given_teacher(image_tar: Path, tmp_path: Path):
    import json

    from rlcompress.data import DataConfig
    from rlcompress.engine import TrainConfig
    from rlcompress.jobs.share import share
    from rlcompress.models import load_checkpoint, model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    torch.manual_seed(1)
    save_checkpoint(build_model("resnet32", num_classes=3), model_spec("resnet32", num_classes=3),
                    tmp_path, "big")
    data = DataConfig(source=str(image_tar), data_dir=str(tmp_path / "d"), val_size=3)
    cfg = TrainConfig(epochs=1, batch_size=4, distill=1.0, precision="fp32", progress=False)
    dense, big = str(tmp_path / "dense.safetensors"), str(tmp_path / "big.safetensors")
    own = share(dense, str(tmp_path / "own"), "k4", data=data, cfg=cfg)
    taught = share(dense, str(tmp_path / "big-taught"), "k4", data=data, cfg=cfg, teacher=big)
    assert own["teacher"] is None and taught["teacher"] == big
    saved = json.loads((tmp_path / "big-taught" / "finetune" / "config.json").read_text())
    assert saved["teacher"] == big
    # with the teacher's soft labels alone, another teacher trains other weights
    a, _ = load_checkpoint(tmp_path / "own" / "finetune" / "last.safetensors")
    b, _ = load_checkpoint(tmp_path / "big-taught" / "finetune" / "last.safetensors")
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(),
                                                     b.state_dict().values(), strict=True))
    # a resumed fine-tuning keeps its teacher; a teacher needs distillation
    with pytest.raises(ValueError, match="distilled from"):
        share(dense, str(tmp_path / "big-taught"), "k4", data=data, cfg=cfg, resume=True)
    with pytest.raises(ValueError, match="distill"):
        share(dense, str(tmp_path / "x"), "k4", data=data, teacher=big,
              cfg=TrainConfig(epochs=1, distill=0.0, progress=False))
