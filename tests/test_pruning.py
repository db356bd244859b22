from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torch import nn

from rlcompress.models import build_model, load_checkpoint, model_spec, save_checkpoint
from rlcompress.pruning import (
    FilterMasks,
    PruneConfig,
    apply_layer_shapes,
    count_flops,
    count_params,
    fpgm_scores,
    keep_indices,
    layer_shapes,
    num_pruned,
    paper_weight_counts,
    shrink_generic,
    shrink_resnet,
)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and batch-norm statistics, so equalities are not trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def test_fpgm_matches_brute_force():
    g = torch.Generator().manual_seed(1)
    for n, cin, k in [(5, 3, 3), (8, 2, 1), (16, 4, 3)]:
        w = torch.randn(n, cin, k, k, generator=g)
        brute = torch.tensor([
            sum(float(torch.sqrt(((w[i] - w[j]) ** 2).sum())) for j in range(n)) for i in range(n)
        ])
        assert torch.allclose(fpgm_scores(w).double(), brute.double(), rtol=1e-5)
        kept = keep_indices(w, 0.4, "fpgm")
        pruned = sorted(set(range(n)) - set(kept.tolist()))
        # the pruned filters are exactly those with the smallest distance sums
        assert sorted(brute.argsort()[: len(pruned)].tolist()) == pruned


def test_fpgm_uses_signed_weights():
    # filters w and -w have equal norms but are far apart: the criterion must see the sign
    w = torch.stack([torch.ones(1, 1, 1), -torch.ones(1, 1, 1), 0.9 * torch.ones(1, 1, 1)])
    assert fpgm_scores(w).argmin() == 2  # 0.9 sits nearest the others' geometric median


def test_norm_criteria():
    w = torch.zeros(4, 1, 1, 1)
    w[:, 0, 0, 0] = torch.tensor([3.0, -0.1, 2.0, 0.5])
    assert keep_indices(w, 0.5, "l1").tolist() == [0, 2]
    assert keep_indices(w, 0.5, "l2").tolist() == [0, 2]
    with pytest.raises(KeyError):
        keep_indices(w, 0.5, "l3")


def test_rounding_rule():
    assert [16 - num_pruned(16, 0.4), 32 - num_pruned(32, 0.4), 64 - num_pruned(64, 0.4)] == [10, 19, 38]
    assert num_pruned(3, 0.99) == 2  # one filter always stays
    with pytest.raises(ValueError, match="rate"):
        num_pruned(16, 1.0)


def test_impossible_requests():
    with pytest.raises(ValueError, match="rate"):
        FilterMasks.compute(build_model("resnet20"), PruneConfig(rate=1.0))
    with pytest.raises(ValueError, match="no Conv2d"):
        FilterMasks.compute(nn.Sequential(nn.Linear(4, 2)), PruneConfig())
    with pytest.raises(ValueError, match="not convs"):
        FilterMasks.compute(build_model("resnet20"), PruneConfig(skip=["linear"]))


def test_masks_survive_optimizer_steps():
    torch.manual_seed(0)
    model = build_model("resnet20")
    masks = FilterMasks.compute(model, PruneConfig())
    masks.apply(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(3):
        loss = model(torch.randn(4, 3, 32, 32)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        masks(model)
    mods = dict(model.named_modules())
    for name, keep in masks.keep.items():
        assert mods[name].weight[~keep].abs().sum() == 0
        assert mods[masks.bn_of[name]].weight[~keep].abs().sum() == 0
        assert mods[name].weight[keep].abs().sum() > 0


@pytest.mark.parametrize("name", ["resnet20", "resnet32"])
@pytest.mark.parametrize("criterion", ["fpgm", "l1"])
def test_masked_equals_physical_resnet(name, criterion):
    torch.manual_seed(0)
    model = _randomize(build_model(name))
    spec = model_spec(name)
    masks = FilterMasks.compute(model, PruneConfig(rate=0.4, criterion=criterion))
    masks.apply(model)
    small, small_spec = shrink_resnet(model, spec, masks)
    small.eval()
    x = torch.randn(4, 3, 32, 32)
    assert torch.allclose(model(x), small(x), atol=1e-4, rtol=1e-4)
    assert count_params(small) < 0.5 * count_params(model)
    assert small_spec["stem"] == 10


def test_repeated_pruning_of_a_pruned_resnet():
    torch.manual_seed(0)
    model = _randomize(build_model("resnet20"))
    spec = model_spec("resnet20")
    masks = FilterMasks.compute(model, PruneConfig(rate=0.3))
    masks.apply(model)
    small, small_spec = shrink_resnet(model, spec, masks)
    small.eval()
    masks2 = FilterMasks.compute(small, PruneConfig(rate=0.3, criterion="l2"))
    masks2.apply(small)
    smaller, _ = shrink_resnet(small, small_spec, masks2)
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(small(x), smaller.eval()(x), atol=1e-4, rtol=1e-4)


def test_pruned_spec_round_trip(tmp_path: Path):
    torch.manual_seed(0)
    model = _randomize(build_model("resnet20"))
    masks = FilterMasks.compute(model, PruneConfig())
    masks.apply(model)
    small, spec = shrink_resnet(model, model_spec("resnet20"), masks)
    save_checkpoint(small, spec, tmp_path, "p")
    masks.save(tmp_path / "m.safetensors")
    again, _ = load_checkpoint(tmp_path / "p.safetensors")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(small.eval()(x), again.eval()(x))
    m2 = FilterMasks.load(tmp_path / "m.safetensors")
    assert m2.bn_of == masks.bn_of
    assert all(torch.equal(m2.keep[k], masks.keep[k]) for k in masks.keep)


class PlainStack(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.c3, self.b3 = nn.Conv2d(12, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = self.pool(torch.relu(self.b1(self.c1(x))))
        x = self.pool(nn.functional.relu(self.b2(self.c2(x))))
        x = self.pool(self.b3(self.c3(x)).relu())
        return self.fc(torch.flatten(x, 1))


class WithResidual(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.b2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.b1(self.c1(x)))
        h = h + self.b2(self.c2(h))
        return self.fc(h.mean((2, 3)))


def test_masked_equals_physical_plain_stack():
    torch.manual_seed(0)
    model = _randomize(PlainStack())
    masks = FilterMasks.compute(model, PruneConfig(rate=0.5))
    masks.apply(model)
    x = torch.randn(3, 3, 32, 32)
    small, report = shrink_generic(model, masks, x)
    assert report.kept == {"c1": 4, "c2": 6, "c3": 3} and not report.kept_whole
    assert torch.allclose(model(x), small.eval()(x), atol=1e-5)
    assert small.fc.in_features == 3 * 16
    # rebuild from the shapes spec + state_dict
    fresh = apply_layer_shapes(PlainStack(), layer_shapes(small))
    fresh.load_state_dict(small.state_dict())
    assert torch.equal(fresh.eval()(x), small(x))


def test_generic_reports_what_it_cannot_shrink():
    torch.manual_seed(0)
    model = _randomize(WithResidual())
    masks = FilterMasks.compute(model, PruneConfig(rate=0.5))
    masks.apply(model)
    x = torch.randn(2, 3, 16, 16)
    small, report = shrink_generic(model, masks, x)
    assert set(report.kept_whole) == {"c1", "c2"}
    assert "consumers" in report.kept_whole["c1"] or "residual" in report.kept_whole["c1"]
    assert torch.allclose(model(x), small.eval()(x), atol=1e-6)


def test_counts_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(4 * 5 * 5, 2))
    # conv: 4 filters * 3*3*3 weights; linear: 100*2 + 2
    assert count_params(net) == 108 + 202
    # conv: 2 * (5*5 outputs * 4 channels) * 27 MACs; linear: 2 * 100 * 2
    assert count_flops(net, (1, 3, 5, 5)) == 2 * 25 * 4 * 27 + 2 * 100 * 2
    masks = FilterMasks({"0": torch.tensor([True, False, True, True])}, {})
    dense, kept = paper_weight_counts(net, masks)
    assert (dense, kept) == (108 + 200, 81 + 200)


def test_paper_ratio_of_fpgm_40_percent():
    model = build_model("resnet20")
    masks = FilterMasks.compute(model, PruneConfig())
    dense, kept = paper_weight_counts(model, masks)
    assert 1.6 < dense / kept < 1.72  # the paper's 1.67x, up to the per-layer rounding


def test_all_kept_filters_combinations_small():
    # every subset of kept filters on a tiny resnet stem gives an exact physical model
    spec = {**model_spec("resnet20")}
    model = _randomize(build_model(spec))
    x = torch.randn(1, 3, 8, 8)
    for drop in itertools.combinations(range(16), 2):
        keep = torch.ones(16, dtype=torch.bool)
        keep[list(drop)] = False
        masks = FilterMasks({"conv1": keep}, {"conv1": "bn1"})
        m = _randomize(build_model(spec))
        m.load_state_dict(model.state_dict())
        masks.apply(m)
        small, _ = shrink_resnet(m, spec, masks)
        assert torch.allclose(m(x), small.eval()(x), atol=1e-4)
        if drop[0] > 2:
            break


def test_prune_job_end_to_end(image_tar: Path, tmp_path: Path, capsys):
    from rlcompress.cli import main

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    common = ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3",
              "--epochs", "1", "--batch-size", "4", "--precision", "fp32", "--quiet"]
    out = tmp_path / "p"
    res_file = tmp_path / "res" / "fpgm.json"
    assert main(["prune", "--model", str(tmp_path / "dense.safetensors"), "--out", str(out),
                 "--results", str(res_file), *common]) == 0
    import json

    summary = json.loads(res_file.read_text())
    for key in ("top1", "top5", "val_top1", "paper_ratio", "params", "params_dense", "flops",
                "flops_dense", "latency_ms", "epochs", "seconds", "command"):
        assert key in summary
    assert summary["params"] < summary["params_dense"] and summary["flops"] < summary["flops_dense"]
    assert 1.6 < summary["paper_ratio"] < 1.72
    # the fine-tuned pruned model is a plain checkpoint that evaluates to the reported number
    capsys.readouterr()
    assert main(["evaluate", str(out / "finetune" / "best.safetensors"), "--source", str(image_tar),
                 "--data-dir", str(tmp_path / "d"), "--val-size", "3", "--precision", "fp32",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(summary["top1"], abs=0.01)
    # soft masks (FPGM's own schedule) in mask mode
    assert main(["prune", "--model", str(tmp_path / "dense.safetensors"), "--out",
                 str(tmp_path / "soft"), "--mode", "mask", "--soft", *common]) == 0
