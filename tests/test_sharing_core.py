"""Sensitivity-weighted clustering, batch-norm re-estimation and trained quantization."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.conftest import load_benchmark, planted_data
from torch import nn

from rlcompress.clustering import (
    ShareConfig,
    cluster_1d,
    clusterable_layers,
    exact_1d,
    fisher_importance,
    freeze_qat,
    is_qat,
    lloyd_1d,
    qat_layers,
    qat_model,
    qat_taus,
    resolve_policy,
    shared_layers,
)
from rlcompress.clustering.qat import _soft_kmeans
from rlcompress.clustering.quantize import sharing_spec
from rlcompress.codec import load_compressed, save_compressed
from rlcompress.engine import TrainConfig, calibration_batches, fit, recalibrate_bn
from rlcompress.models import build_model, load_checkpoint, model_spec, save_checkpoint
from rlcompress.pruning import FilterMasks, PruneConfig


def _weighted_sse(x, w, book):
    return float((w * ((x[:, None] - book[None, :]) ** 2).min(axis=1)).sum())


def _brute_weighted(x, w, k):
    """Best weighted SSE over every split of sorted x into k contiguous runs."""
    order = np.argsort(x)
    xs, ws = x[order], w[order]
    best = np.inf
    for cuts in itertools.combinations(range(1, len(xs)), k - 1):
        bounds = (0, *cuts, len(xs))
        total = 0.0
        for a, b in itertools.pairwise(bounds):
            c = np.average(xs[a:b], weights=ws[a:b])
            total += float((ws[a:b] * (xs[a:b] - c) ** 2).sum())
        best = min(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_weighted_exact_is_optimal_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=9), rng.random(9) ** 3 + 0.01
    for k in (2, 3, 4):
        res = exact_1d(x, k, weights=w)
        assert _weighted_sse(x, w, res.codebook.astype(np.float64)) == pytest.approx(
            _brute_weighted(x, w, k), rel=1e-5)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(5, 300), k=st.integers(2, 24), seed=st.integers(0, 10_000))
def test_weighted_exact_never_worse_than_weighted_lloyd(n, k, seed):
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=n), rng.exponential(size=n)
    exact = _weighted_sse(x, w, exact_1d(x, k, weights=w).codebook.astype(np.float64))
    for init in ("linear", "kmeans++"):
        lloyd = lloyd_1d(x, k, init=init, weights=w)
        assert exact <= _weighted_sse(x, w, lloyd.codebook.astype(np.float64)) * (1 + 1e-5) + 1e-9


def test_weighted_exact_fills_the_empty_clusters_ckwrap_leaves():
    """Zero importances (dead channels) are floored to a tiny weight; ckwrap then may return an
    empty cluster whose centre is 0/0. The result must still be k finite centroids, no worse
    than k-1."""
    import ckwrap

    rng = np.random.default_rng(10)
    x, w = np.sort(rng.normal(size=600)), rng.exponential(size=600)
    w[rng.random(600) < 0.1] = 0.0
    raw = ckwrap.ckmeans(x, 128, weights=np.maximum(w, w.max() * 1e-12))
    assert (np.asarray(raw.sizes) == 0).any()  # the case this guards against still happens
    res = exact_1d(x, 128, weights=w)
    assert np.isfinite(res.codebook).all() and len(np.unique(res.codebook)) == 128
    fewer = exact_1d(x, 127, weights=w)
    floor = np.maximum(w, w.max() * 1e-12)
    assert _weighted_sse(x, floor, res.codebook.astype(np.float64)) <= \
        _weighted_sse(x, floor, fewer.codebook.astype(np.float64)) * (1 + 1e-9)


def test_a_layer_the_output_ignores_gets_zero_importance_and_plain_clusters():
    """A layer defined but never called (an auxiliary head) must not stop the sensitive
    clustering: a warning names it, and its weights are clustered with equal weights."""
    from rlcompress.clustering.sharing import cluster_layer

    class WithAux(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.aux = nn.Linear(6, 3), nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    torch.manual_seed(0)
    net = WithAux()
    batches = [(torch.randn(16, 6), torch.randint(0, 3, (16,)))]
    with pytest.warns(UserWarning, match=r"\['aux'\] take no part"):
        imp = fisher_importance(net, batches, ["fc", "aux"])
    assert (imp["fc"] > 0).any() and not imp["aux"].any()
    cfg = ShareConfig()  # the default, Fisher-weighted method
    res, _ = cluster_layer(net.aux.weight, 4, cfg, name="aux", importance=imp["aux"])
    plain = exact_1d(net.aux.weight.detach().flatten().numpy().astype(np.float64), 4)
    assert np.allclose(np.sort(res.codebook), np.sort(plain.codebook), atol=1e-6)


def test_weights_steer_the_centroids_and_are_checked():
    x = np.array([0.0, 0.1, 0.2, 1.0, 1.1, 5.0])
    heavy_tail = np.array([1, 1, 1, 1, 1, 1000.0])
    # with the outlier made important, it gets a centroid to itself
    assert 5.0 in cluster_1d(x, 2, "sensitive", weights=heavy_tail).codebook
    # and a weighted centroid is the weighted mean of its cluster
    pair = np.array([0.0, 1.0, 10.0, 11.0])
    assert cluster_1d(pair, 2, "exact").codebook.tolist() == [0.5, 10.5]
    assert cluster_1d(pair, 2, "sensitive", weights=np.array([1, 3, 1, 1.0])).codebook.tolist() == [0.75, 10.5]
    with pytest.raises(ValueError, match="importances"):
        cluster_1d(x, 2, "sensitive")
    for bad in (-np.ones(6), np.full(6, np.nan), np.zeros(6), np.ones(5)):
        with pytest.raises(ValueError, match="weights"):
            cluster_1d(x, 2, "sensitive-lloyd", weights=bad)
    with pytest.raises(ValueError, match="method"):
        ShareConfig(method="magic")


def _tiny_resnet(pruned: bool = False) -> tuple[nn.Module, FilterMasks | None]:
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=4)
    masks = None
    if pruned:
        masks = FilterMasks.compute(model, PruneConfig(rate=0.5))
        masks.apply(model)
    return model, masks


def test_fisher_importance_is_zero_on_pruned_filters_and_deterministic():
    model, masks = _tiny_resnet(pruned=True)
    data = planted_data()
    batches = calibration_batches(data, 64, seed=0)
    layers = list(clusterable_layers(model))
    state = copy.deepcopy(model.state_dict())
    a = fisher_importance(model, batches, layers)
    b = fisher_importance(model, batches, layers)
    mods = dict(model.named_modules())
    for name, keep in masks.keep.items():
        imp = a[name]
        assert imp.shape == mods[name].weight.shape
        assert imp[~keep].abs().sum() == 0 and imp[keep].sum() > 0
        assert torch.equal(imp, b[name])
    # the model is left exactly as it was
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.parameters())


def test_bn_recalibration_changes_only_running_statistics():
    model, _ = _tiny_resnet()
    data = planted_data()
    model.train()
    before = copy.deepcopy(model.state_dict())
    used = recalibrate_bn(model, calibration_batches(data, 96, seed=1))
    assert used == 96 and model.training
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.rsplit(".", 1)[1] in ("running_mean", "running_var", "num_batches_tracked")
                           for k in changed)
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    # exactly the mean over the batches: the first BN's mean is the channel mean of conv1's output
    x = torch.cat([b[0] for b in calibration_batches(data, 96, seed=1)])
    with torch.no_grad():
        ref = model.conv1(x).mean(dim=(0, 2, 3))
    assert torch.allclose(model.bn1.running_mean, ref, atol=1e-5)


def test_bn_shift_keeps_unchanged_statistics_and_moves_them_by_the_measured_change():
    from rlcompress.engine.bn import bn_reference

    model, _ = _tiny_resnet()
    data = planted_data()
    batches = calibration_batches(data, 96, seed=1)
    before = copy.deepcopy(model.state_dict())
    ref = bn_reference(model, batches)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    recalibrate_bn(model, batches, reference=ref)  # same weights: no change to shift by
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.allclose(before[k], v, atol=1e-5), k
    with torch.no_grad():  # new weights: the shift equals what replacing would move
        model.conv1.weight.mul_(1.5)
    replaced = copy.deepcopy(model)
    recalibrate_bn(replaced, batches)
    recalibrate_bn(model, batches, reference=ref)
    run_mean, run_var, ref_mean, ref_var = ref["bn1"]
    assert torch.allclose(model.bn1.running_mean - run_mean,
                          replaced.bn1.running_mean - ref_mean, atol=1e-5)
    assert torch.allclose(model.bn1.running_var / run_var,
                          replaced.bn1.running_var / ref_var, rtol=1e-4)
    assert not torch.allclose(model.bn1.running_mean, replaced.bn1.running_mean)


class _Kill(Exception):
    pass


def _train_qat(tmp_path: Path, epochs: int = 2, resume: bool = False, name: str = "run",
               kill_at: int = 0, tau: float = 0.0):
    model, masks = _tiny_resnet(pruned=True)
    data = planted_data(n_train=128, n_val=32)
    layers = clusterable_layers(model)
    cfg = ShareConfig(method="sensitive", calibration_images=32, bn_images=32, dkm_tau=tau)
    imp = fisher_importance(model, calibration_batches(data, 32), list(layers))
    qat_model(model, resolve_policy("k4", layers), cfg, importance=imp)
    spec = {**model_spec("resnet20", num_classes=4), **sharing_spec(model)}
    assert bool(spec["qat"] != True) == (tau > 0)  # noqa: E712 -- soft layers store temperatures
    tcfg = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, precision="fp32", progress=False,
                       select="last")
    steps = {"n": 0}

    def kill(_model):
        steps["n"] += 1
        if steps["n"] == kill_at:
            raise _Kill

    fit(model, spec, data, tcfg, tmp_path / name, resume=resume, step_hooks=[kill])
    return model, masks, spec, data


@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_qat_keeps_pruned_weights_zero_and_exports_bit_exactly(tmp_path: Path, tau: float):
    model, masks, spec, data = _train_qat(tmp_path, tau=tau)
    mods = dict(model.named_modules())
    for name, keep in masks.keep.items():
        m = mods[name]
        assert is_qat(m) and len(m.codebook) <= 4
        model(torch.zeros(1, 3, 16, 16))  # eval forward: the stored codebook and indices
        assert m.weight[~keep].abs().sum() == 0
        # assignments moved during training (weights can change cluster)
    x = torch.cat([b[0] for b in calibration_batches(data, 64, seed=5)])
    model.eval()
    with torch.no_grad():
        y_qat = model(x)
    freeze_qat(model)
    assert not qat_layers(model) and len(shared_layers(model)) == len(masks.keep) + 1
    with torch.no_grad():
        assert torch.equal(model(x), y_qat)
    arch = {k: v for k, v in spec.items() if k not in ("sharing", "qat")}
    save_compressed(model, arch, tmp_path / "m.rlc")
    decoded, _ = load_compressed(tmp_path / "m.rlc")
    for name, m in shared_layers(model).items():
        d = dict(decoded.named_modules())[name]
        assert torch.equal(d.weight, m.weight)
    with torch.no_grad():
        assert torch.equal(decoded.eval()(x), y_qat)


def test_a_frozen_layer_stays_frozen_through_trained_quantization(tmp_path: Path):
    from rlcompress.clustering.sharing import unshare

    model, _ = _tiny_resnet(pruned=True)
    model.conv1.requires_grad_(False)  # e.g. a user's frozen stem
    stem = model.conv1.weight.detach().clone()
    data = planted_data(n_train=64, n_val=32)
    layers = clusterable_layers(model)
    imp = fisher_importance(model, calibration_batches(data, 32), list(layers))
    qat_model(model, resolve_policy("k4", layers), ShareConfig(bn_images=32), importance=imp)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1.latent"}
    start = model.conv1.latent.detach().clone()
    spec = {**model_spec("resnet20", num_classes=4), **sharing_spec(model)}
    fit(model, spec, data, TrainConfig(epochs=1, batch_size=32, lr=0.05, precision="fp32",
                                       progress=False, select="last"), tmp_path / "f")
    assert torch.equal(model.conv1.latent, start) and torch.equal(start, stem)
    freeze_qat(model)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"conv1.codebook"}
    unshare(model)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"conv1.weight"}


@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_qat_reassigns_weights_and_resumes_exactly(tmp_path: Path, tau: float):
    model, _ = _tiny_resnet(pruned=True)
    start = {n: m.weight.detach().clone() for n, m in clusterable_layers(model).items()}
    full, _, _, _ = _train_qat(tmp_path, epochs=2, name="full", tau=tau)
    moved = sum(int((m.latent - start[n]).abs().max() > 0) for n, m in qat_layers(full).items())
    assert moved == len(start)
    with pytest.raises(_Kill):  # 4 steps per epoch: dies inside epoch 2
        _train_qat(tmp_path, epochs=2, name="part", kill_at=6, tau=tau)
    resumed, _, _, _ = _train_qat(tmp_path, epochs=2, resume=True, name="part", tau=tau)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    # a QAT checkpoint loads back with its latent weights and (soft) temperatures
    again, spec = load_checkpoint(tmp_path / "full" / "last.safetensors")
    assert spec["qat"] and all(torch.equal(a.latent, b.latent)
                               for a, b in zip(qat_layers(again).values(), qat_layers(full).values(),
                                               strict=True))
    assert qat_taus(again) == qat_taus(full) and bool(qat_taus(full)) == (tau > 0)


def _corrupt_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.add_(3.0)
                m.running_var.mul_(50.0)


def test_hard_bn_hook_re_estimates_batch_norm_only_where_validation_improves(tmp_path: Path):
    from rlcompress.clustering.quantize import hard_bn_hook
    from rlcompress.engine import evaluate_model

    model, _, _, data = _train_qat(tmp_path, tau=0.05)
    unshared, _ = _tiny_resnet(pruned=True)
    cfg = ShareConfig(bn_images=64, dkm_tau=0.05)
    hook = hard_bn_hook(model, unshared, data, cfg, "fp32", "cpu")
    assert hook is not None
    assert hard_bn_hook(model, unshared, data, ShareConfig(dkm_tau=0.05, dkm_bn=False)) is None
    assert hard_bn_hook(model, unshared, data, ShareConfig(bn_images=0, dkm_tau=0.05)) is None
    hard, _, _, _ = _train_qat(tmp_path, tau=0.0, name="hard", epochs=1)
    assert hard_bn_hook(hard, unshared, data, cfg) is None  # trains on what it evaluates

    def val() -> float:
        return evaluate_model(model, data, "val", "fp32", "cpu")["top1"]

    _corrupt_bn(model)
    corrupted, weights = val(), {k: v.clone() for k, v in model.state_dict().items()
                                 if not k.rsplit(".", 1)[1].startswith(("running", "num_batches"))}
    hook(model)
    fixed = val()
    assert fixed > corrupted + 20
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    state = copy.deepcopy(model.state_dict())
    hook(model)  # nothing better to find: the statistics stay exactly as they are
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert val() == fixed


def test_fit_runs_eval_hooks_before_validating(tmp_path: Path):
    model, _ = _tiny_resnet()
    data = planted_data(n_train=64, n_val=32)
    calls = []

    def hook(net: nn.Module, validate) -> None:
        calls.append(net.training)
        _corrupt_bn(net)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_var.mul_(1e8)  # every logit (nearly) the same

    tcfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, precision="fp32", progress=False)
    fit(model, model_spec("resnet20", num_classes=4), data, tcfg, tmp_path / "run",
        eval_hooks=[hook])
    assert len(calls) == 2
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    # validation saw the hook's statistics: uniform outputs, a loss of ln 4 (trained: far above)
    assert all(abs(float(r.split(",")[4]) - np.log(4)) < 0.15 for r in rows)


def test_fit_takes_the_last_eval_hooks_validation_instead_of_validating_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from rlcompress.engine import train as train_mod

    passes = []
    real = train_mod.evaluate
    monkeypatch.setattr(train_mod, "evaluate", lambda *a, **k: passes.append(1) or real(*a, **k))
    model, _ = _tiny_resnet()
    data = planted_data(n_train=64, n_val=32)
    seen = []

    def hook(net: nn.Module, validate):
        seen.append(validate())
        return seen[-1]

    tcfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, precision="fp32", progress=False)
    fit(model, model_spec("resnet20", num_classes=4), data, tcfg, tmp_path / "run",
        eval_hooks=[hook, lambda net, validate: None, hook])
    assert len(passes) == 2 * 2  # each hook's own pass, none from fit
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[1:]
    assert [float(r.split(",")[5]) for r in rows] == [round(v["top1"], 3) for v in seen[1::2]]


def test_soft_assignment_gives_a_cluster_its_mean_gradient_and_boundary_weights_more():
    # DKM's gradient (straight-through would give each weight its own, 1, and others 0): a
    # weight inside a cluster moves with its cluster's mean gradient; one close to the boundary
    # between two centroids gets a larger share of its own, so it can change cluster
    w = torch.tensor([-1.0, -0.98, -0.96, 0.96, 0.98, 1.0, 0.01], requires_grad=True)
    soft, c = _soft_kmeans(w, torch.tensor([-0.9, 0.9]), tau=0.05)
    assert torch.allclose(c, torch.tensor([-0.98, 0.7375]), atol=1e-3)
    soft[0].backward()
    assert torch.allclose(w.grad[:3], torch.full((3,), 1 / 3), atol=0.01)
    assert w.grad[3:].abs().max() < 0.02
    w.grad = None
    soft, _ = _soft_kmeans(w, torch.tensor([-0.9, 0.9]), tau=0.05)
    soft[6].backward()
    assert w.grad[6] > 1.2 * w.grad[3] > 0.2


def test_bracketing_soft_assignment_matches_the_full_softmax_at_small_temperature():
    # DKM's full n x k attention, written out: the two-centroid version must agree with it
    # where the other centroids' mass is negligible (the default temperature and below)
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(500, generator=gen) * 0.05
    for k in (3, 8):
        book = torch.quantile(w, torch.linspace(0.05, 0.95, k))
        tau = 0.04 * book.diff().square().mean().item()
        c = book.clone()
        for _ in range(3):
            a = torch.softmax(-(w[:, None] - c[None, :]).square() / tau, dim=1)
            c = (a * w[:, None]).sum(0) / a.sum(0)
        soft, c2 = _soft_kmeans(w, book, tau)
        torch.testing.assert_close(c2, c, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(soft, (a * c[None, :]).sum(1), atol=1e-5, rtol=1e-4)


def test_dkm_bn_benchmark_scores_a_point_three_ways(tmp_path: Path):
    model, _, spec, data = _train_qat(tmp_path, tau=0.05)
    _corrupt_bn(model)
    point = tmp_path / "point"
    save_checkpoint(model, spec, point / "share-dkm0.04" / "finetune", "best")
    start, _ = _tiny_resnet(pruned=True)
    save_checkpoint(start, model_spec("resnet20", num_classes=4), point / "prune" / "finetune",
                    "best")
    bench = load_benchmark("dkm_bn")
    row = bench.score(point, "dkm0.04", data, ShareConfig(bn_images=64))
    assert row["start"].endswith("prune/finetune/best.safetensors")
    assert row["val_shift"] > row["val_trained"] + 20 and row["kept"] == "shift"
    assert 0 <= row["val_replace"] <= 100


def test_peers_benchmark_runs_tiny(tmp_path: Path):
    peers = load_benchmark("peers")
    if not peers.have_coremltools():
        pytest.skip("coremltools (the [peers] extra) is not installed")
    peers._quiet()
    model, _ = _tiny_resnet()
    args = peers.parse(["--bits", "2", "--ft-bits", "2", "--epochs", "1", "--lrs", "0.01",
                        "--calibration", "16", "--out", str(tmp_path / "p.json"), "--rlc",
                        "--dkm-tau", "0.04"])
    spec = model_spec("resnet20", num_classes=4)
    rows = peers.run({"tiny": model.eval()}, planted_data(n_train=64, n_val=16), args,
                     tmp_path / "p.json", {"tiny": spec})
    for r in rows:  # every final model, ours or a peer's, is a real file at 2 bits per weight
        decoded, manifest = load_compressed(r["file"])
        assert r["file_bytes"] == Path(r["file"]).stat().st_size
        assert {lay["bits"] for lay in manifest["layers"]} <= {1, 2}
    methods = {(r["tool"], r["method"]) for r in rows}
    assert {("rlcompress", "default"), ("coremltools", "SKMPalettizer"),
            ("coremltools", "PostTrainingPalettizer"), ("rlcompress", "qat"),
            ("coremltools", "DKMPalettizer"), ("rlcompress", "dkm0.04")} <= methods
    assert all(0 <= r["top1"] <= 100 and r["seconds"] >= 0 for r in rows)
    # a rerun finds every row done and adds none
    assert len(peers.run({"tiny": model.eval()}, planted_data(n_train=64, n_val=16), args,
                         tmp_path / "p.json")) == len(rows)
    peers.plot(rows, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0
    other, _ = _tiny_resnet()  # other weights under the same label: refused, not mixed in
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    with pytest.raises(ValueError, match="other weights"):
        peers.run({"tiny": other.eval()}, planted_data(n_train=64, n_val=16), args,
                  tmp_path / "p.json")


def test_share_never_returns_a_model_worse_than_before_fine_tuning(image_tar: Path, tmp_path: Path,
                                                                    monkeypatch):
    import importlib

    from rlcompress.data import DataConfig

    share_job = importlib.import_module("rlcompress.jobs.share")  # the module, not the function

    real_fit = share_job.fit

    def fit_that_never_helps(*args, **kwargs):
        return {**real_fit(*args, **kwargs), "best_val_top1": -1.0}

    monkeypatch.setattr(share_job, "fit", fit_that_never_helps)
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    data = DataConfig(source=str(image_tar), data_dir=str(tmp_path / "d"), val_size=6)
    summary = share_job.share(
        str(tmp_path / "dense.safetensors"), str(tmp_path / "s"), "k4",
        ShareConfig(calibration_images=8, bn_images=8), data,
        TrainConfig(epochs=1, batch_size=4, lr=0.5, precision="fp32", progress=False))
    assert summary["share"]["finetune"] == "qat" and summary["share"]["method"] == "sensitive"
    assert summary["kept_clustered_model"]
    # the exported file is the clustered model that was measured before fine-tuning
    assert summary["val_top1"] == pytest.approx(summary["val_top1_before_finetune"], abs=0.01)
    shared, _ = load_checkpoint(tmp_path / "s" / "shared.safetensors")
    decoded, _ = load_compressed(tmp_path / "s" / "model.rlc")
    freeze_qat(shared)
    for name, m in shared_layers(shared).items():
        assert torch.equal(dict(decoded.named_modules())[name].weight, m.weight)


def test_share_palettized_keeps_another_tools_values_exactly():
    from rlcompress.clustering.sharing import share_palettized

    model, _ = _tiny_resnet(pruned=True)
    with torch.no_grad():
        for m in clusterable_layers(model).values():
            m.weight.copy_(torch.round(m.weight * 4).clamp(-2, 1) / 4)  # at most 4 values
    before = {n: m.weight.detach().clone() for n, m in clusterable_layers(model).items()}
    ks = share_palettized(model)
    assert set(ks) == set(before) and max(ks.values()) <= 4
    for name, m in shared_layers(model).items():
        assert torch.equal(m.weight, before[name])
