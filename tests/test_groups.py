"""Coupled channel-group pruning: every pattern shrinks exactly or is kept whole and reported."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from rlcompress.models.shapes import apply_layer_shapes
from rlcompress.models.zoo import DenseNetTiny, MobileNetV2, ResNet18, randomise_batchnorm
from rlcompress.pruning import layer_shapes
from rlcompress.pruning.groups import GroupPruneConfig, prune_groups

TINY_MBV2 = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2))


def _nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {
        "resnet18": ResNet18(num_classes=4, width=8),
        "mobilenetv2": MobileNetV2(num_classes=4, settings=TINY_MBV2, last=32),
        "densenet": DenseNetTiny(num_classes=4, growth=6, layers=2, stem=8),
    }


@pytest.fixture(scope="module")
def pruned() -> dict[str, tuple[nn.Module, nn.Module, object]]:
    out = {}
    for name, net in _nets().items():
        randomise_batchnorm(net)
        net.eval()
        small, report = prune_groups(net, torch.randn(2, 3, 32, 32), GroupPruneConfig(rate=0.5))
        out[name] = (net, small, report)
    return out


@pytest.mark.parametrize("name", ["resnet18", "mobilenetv2", "densenet"])
def test_example_networks_shrink_exactly(pruned, name: str):
    original, small, report = pruned[name]
    assert report.convs_shrunk >= 0.8 * report.convs, report.kept_whole
    done = [g for g in report.groups if g.status == "pruned"]
    assert done and all(g.max_abs_diff <= 1e-5 for g in done)
    # widths halve on both sides of most weights: about a quarter to a half of the parameters
    # and FLOPs remain (the input and output layers keep one side whole)
    assert 0.2 <= report.params_after / report.params_before <= 0.5
    assert 0.2 <= report.flops_after / report.flops_before <= 0.5
    assert report.params_before - report.params_after == sum(g.params_saved for g in done)
    x = torch.randn(3, 3, 32, 32)
    assert small(x).shape == original(x).shape
    # the caller's model is untouched
    assert sum(p.numel() for p in original.parameters()) == report.params_before


def test_residual_groups_couple_every_writer_and_reader(pruned):
    _, small, report = pruned["resnet18"]
    stage2 = next(g for g in report.groups if "layer2.0.downsample.0" in g.members)
    # projection shortcut, both blocks' conv2 and the next stage's readers share the channels
    for member in ("layer2.0.conv2", "layer2.1.conv2", "layer2.1.conv1", "layer3.0.conv1",
                   "layer3.0.downsample.0"):
        assert member in stage2.members
    kept = stage2.channels - stage2.pruned
    assert small.layer2[0].conv2.out_channels == small.layer2[1].conv2.out_channels == kept
    assert small.layer3[0].conv1.in_channels == small.layer3[0].downsample[0].in_channels == kept


def test_depthwise_chain_prunes_expansion_and_depthwise_together(pruned):
    _, small, _ = pruned["mobilenetv2"]
    block = small.features[2].conv  # expansion, depthwise, projection
    expand, dw, project = block[0][0], block[1][0], block[2][0]
    assert dw.groups == dw.in_channels == dw.out_channels == expand.out_channels
    assert project.in_channels == dw.out_channels


def test_concatenation_maps_ranges_to_producers(pruned):
    original, small, _ = pruned["densenet"]
    for i, layer in enumerate(small.block1):
        produced = small.stem[0].out_channels + sum(lay.conv.out_channels
                                                    for lay in list(small.block1)[:i])
        assert layer.conv.in_channels == produced
    assert small.block1[0].conv.out_channels < original.block1[0].conv.out_channels


def test_pruned_model_rebuilds_from_its_spec(pruned):
    original, small, _ = pruned["mobilenetv2"]
    rebuilt = apply_layer_shapes(copy.deepcopy(original), layer_shapes(small))
    rebuilt.load_state_dict(small.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt.eval()(x), small(x))


class _Gated(nn.Module):
    """A sigmoid after a batch norm, a softplus, a grouped conv: zero does not stay zero."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 1)
        self.g = nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = torch.sigmoid(self.bn(self.a(x)))
        z = self.c(nn.functional.softplus(self.b(y)))
        return self.fc(torch.relu(self.g(z)).mean((2, 3)))


def test_ops_that_do_not_keep_zero_and_grouped_convs_are_kept_whole():
    torch.manual_seed(0)
    model = _Gated().eval()
    small, report = prune_groups(model, torch.randn(2, 3, 16, 16))
    status = {g.name: (g.status, g.reason) for g in report.groups}
    assert status["a"][0] == "kept whole" and "differs from the masked" in status["a"][1]  # sigmoid
    assert status["b"][0] == "kept whole" and "differs from the masked" in status["b"][1]  # softplus
    assert status["c"][0] == "kept whole" and "grouped conv" in status["c"][1]
    assert status["g"][0] == "kept whole" and "grouped conv" in status["g"][1]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(small(x), model(x))  # nothing could be proven: nothing changed
    assert report.convs_shrunk == 0


def test_protected_layer_is_untouched_and_report_says_why():
    torch.manual_seed(0)
    model = ResNet18(num_classes=4, width=8).eval()
    small, report = prune_groups(model, torch.randn(2, 3, 32, 32),
                                 GroupPruneConfig(rate=0.5, protect=("layer3.0.conv1",)))
    assert torch.equal(small.layer3[0].conv1.weight, model.layer3[0].conv1.weight)
    reasons = report.kept_whole
    assert any("protected layer layer3.0.conv1" in r for r in reasons.values())
    with pytest.raises(KeyError, match="not in the model"):
        prune_groups(model, torch.randn(1, 3, 32, 32), GroupPruneConfig(protect=("nope",)))


def test_per_group_rates_and_determinism():
    torch.manual_seed(0)
    model = DenseNetTiny(num_classes=4, growth=6, layers=2, stem=8).eval()
    x = torch.randn(2, 3, 32, 32)
    _, a = prune_groups(model, x, GroupPruneConfig(rate=0.5), rates={"stem.0": 0.0})
    _, b = prune_groups(model, x, GroupPruneConfig(rate=0.5), rates={"stem.0": 0.0})
    assert a.to_dict() == b.to_dict()
    stem = next(g for g in a.groups if g.name == "stem.0")
    assert stem.pruned == 0 and stem.status == "kept whole"
    assert all(g.pruned == g.channels // 2 for g in a.groups if g.status == "pruned")


class TiedNet(nn.Module):
    """One conv applied twice: its input and output channels are one group with the stem's."""

    def __init__(self, detach: bool = False) -> None:
        super().__init__()
        self.stem, self.conv, self.fc = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 4)
        self.detach = detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        for _ in range(2):
            h = torch.relu(nn.functional.conv2d(h, self.conv.weight.detach(), self.conv.bias, padding=1)
                           if self.detach else self.conv(h))
        return self.fc(h.mean((2, 3)))


def test_a_frozen_layer_is_pruned_with_its_group_and_stays_frozen():
    torch.manual_seed(0)
    net = TiedNet().eval()
    net.stem.requires_grad_(False)
    small, report = prune_groups(net, torch.randn(2, 3, 16, 16), GroupPruneConfig(rate=0.5))
    assert report.kept_whole == {}
    assert small.stem.out_channels == small.conv.in_channels == small.conv.out_channels == 4
    assert {n for n, p in small.named_parameters() if not p.requires_grad} == {"stem.weight", "stem.bias"}
    assert all(p.requires_grad for p in net.conv.parameters()) and not net.stem.weight.requires_grad


def test_a_group_the_graph_gets_wrong_is_kept_whole_not_a_crash():
    torch.manual_seed(0)
    net = TiedNet(detach=True).eval()  # the graph cannot see the conv through a detached weight
    x = torch.randn(2, 3, 16, 16)
    small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    assert "stem" in report.kept_whole and "fails to run" in report.kept_whole["stem"]
    torch.testing.assert_close(small(x), net(x))


class _MLPBlock(nn.Module):
    """A ConvNeXt-style block: depthwise conv, a norm over channels, a linear MLP, a layer scale."""

    def __init__(self, c: int = 8, norm: str = "layer") -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c)
        self.pw1, self.pw2 = nn.Linear(c, 4 * c), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.full((c,), 0.5))
        self.fc = nn.Linear(c, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.stem(x)
        h = self.norm(self.dw(x).permute(0, 2, 3, 1))
        x = x + (self.pw2(nn.functional.gelu(self.pw1(h))) * self.gamma).permute(0, 3, 1, 2)
        return self.fc(x.mean((2, 3)))


def test_a_linear_hidden_width_is_pruned_and_a_norm_over_channels_keeps_its_group_whole():
    torch.manual_seed(0)
    net = _MLPBlock().eval()
    x = torch.randn(2, 3, 16, 16)
    with pytest.warns(UserWarning, match="gamma"):  # Torch-Pruning names the bare parameter
        small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    groups = {g.name: g for g in report.groups}
    assert groups["pw1"].status == "pruned" and groups["pw1"].pruned == 16
    assert small.pw1.out_features == small.pw2.in_features == 16
    stream = next(g for g in report.groups if "stem" in g.members)
    assert stream.status == "kept whole" and "LayerNorm" in stream.reason
    assert small.stem.out_channels == 8 and small.gamma.shape == (8,)
    assert "fc" not in groups and small.fc.out_features == 4  # the output layer is never a root
    # the hidden units removed were computing GELU(...) of zeroed rows: exactly the masked model
    masked = copy.deepcopy(net)
    keep = set(range(32))
    with torch.no_grad():
        pruned = [i for i in range(32) if not any(torch.equal(net.pw1.weight[i], w) for w in small.pw1.weight)]
        masked.pw1.weight[pruned] = 0
        masked.pw1.bias[pruned] = 0
    assert len(keep - set(pruned)) == 16
    torch.testing.assert_close(small(x), masked(x), atol=1e-5, rtol=0)


class _GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.g1 = nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8)
        self.c2 = nn.Conv2d(8, 4, 1)  # a fully convolutional classifier: its output is the model's

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.c2(torch.relu(self.g1(self.c1(x)))).mean((2, 3))


def test_group_norm_and_an_output_conv_are_kept_whole_with_their_reasons():
    torch.manual_seed(0)
    net = _GroupNormNet().eval()
    x = torch.randn(2, 3, 8, 8)
    small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    assert set(report.kept_whole) == {"c1", "c2"} and "GroupNorm" in report.kept_whole["c1"]
    assert "model's output" in report.kept_whole["c2"]  # its 4 channels are the class scores
    assert torch.equal(small(x), net(x))


def _shuffle(y: torch.Tensor) -> torch.Tensor:
    n, c, h, w = y.shape
    return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleUnit(nn.Module):
    """A ShuffleNetV2 unit: half the channels pass, half are transformed, then interleaved."""

    def __init__(self, c: int) -> None:
        super().__init__()
        h = c // 2
        self.c1, self.b1 = nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h)
        self.dw, self.b2 = nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h)
        self.c2, self.b3 = nn.Conv2d(h, h, 1, bias=False), nn.BatchNorm2d(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        a, b = x.chunk(2, dim=1)
        b = torch.relu(self.b3(self.c2(self.b2(self.dw(torch.relu(self.b1(self.c1(b))))))))
        return _shuffle(torch.cat([a, b], 1))


class _ShuffleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.u1, self.u2, self.fc = _ShuffleUnit(16), _ShuffleUnit(16), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.u2(self.u1(torch.relu(self.bn(self.stem(x)))))
        return self.fc(x.mean((2, 3)))


def test_a_channel_shuffle_the_graph_gets_wrong_is_kept_whole_not_a_crash():
    torch.manual_seed(0)
    net = _ShuffleNet().eval()
    x = torch.randn(2, 3, 16, 16)
    small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    assert any("channel shuffle" in r for r in report.kept_whole.values()), report.kept_whole
    assert small(x).shape == (2, 4)
    for g in report.groups:  # what was pruned passed the check against the masked network
        assert g.status != "pruned" or g.max_abs_diff <= 1e-5


class _SE(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w = torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * nn.functional.hardsigmoid(self.fc2(w))


class _MBConv(nn.Module):
    """EfficientNet's block: expansion, depthwise, squeeze-and-excitation, projection, add."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.exp, self.b1 = nn.Conv2d(c, 4 * c, 1, bias=False), nn.BatchNorm2d(4 * c)
        self.dw = nn.Conv2d(4 * c, 4 * c, 3, padding=1, groups=4 * c, bias=False)
        self.b2, self.se = nn.BatchNorm2d(4 * c), _SE(4 * c)
        self.pr, self.b3 = nn.Conv2d(4 * c, c, 1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        h = self.se(nn.functional.silu(self.b2(self.dw(nn.functional.silu(self.b1(self.exp(x)))))))
        return x + self.b3(self.pr(h))


class _EffNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(_MBConv(8), _MBConv(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.fc(self.blocks(nn.functional.silu(self.bn(self.stem(x)))).mean((2, 3)))


class _Inception(nn.Module):
    """Three branches (1x1, 1x1 then 3x3, pool then 1x1) concatenated."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.a, self.b1, self.b2 = nn.Conv2d(8, 4, 1), nn.Conv2d(8, 4, 1), nn.Conv2d(4, 4, 3, padding=1)
        self.p, self.bn2, self.fc = nn.Conv2d(8, 4, 1), nn.BatchNorm2d(12), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.relu(self.bn(self.stem(x)))
        pool = nn.functional.max_pool2d(x, 3, 1, 1)
        y = torch.cat([self.a(x), self.b2(torch.relu(self.b1(x))), self.p(pool)], 1)
        return self.fc(torch.relu(self.bn2(y)).mean((2, 3)))


class _UNet(nn.Module):
    """A U-Net-style classifier: downsample, upsample, skip concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.d1, self.d2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.u, self.fc = nn.Conv2d(24, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        a = torch.relu(self.d1(x))
        b = nn.functional.interpolate(torch.relu(self.d2(nn.functional.max_pool2d(a, 2))), scale_factor=2)
        return self.fc(torch.relu(self.u(torch.cat([a, b], 1))).mean((2, 3)))


@pytest.mark.parametrize("net, groups", [
    (_EffNet, 5),  # the residual stream; per block the expansion (with its SE gate), the squeeze
    (_Inception, 5),  # the stem, each branch's output range, the inner 3x3's input
    (_UNet, 3),  # the skip through the concatenation, the upsampled path, the decoder
])
def test_user_architectures_are_pruned_in_every_group_and_rebuild_from_their_spec(net: type, groups: int):
    torch.manual_seed(0)
    model = net()
    randomise_batchnorm(model)
    model.eval()
    x = torch.randn(2, 3, 16, 16)
    small, report = prune_groups(model, x, GroupPruneConfig(rate=0.5))
    assert report.kept_whole == {} and len(report.groups) == groups
    assert report.params_after < 0.5 * report.params_before
    rebuilt = apply_layer_shapes(net(), layer_shapes(small))
    rebuilt.load_state_dict(small.state_dict())
    assert torch.equal(rebuilt.eval()(x), small(x))


class _CRNN(nn.Module):
    """Convs feeding a GRU (audio, telemetry): the graph library cannot build the group of the
    conv the GRU reads, and used to raise inside its walk, ending it for every group."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv1d(2, 16, 3, padding=1), nn.BatchNorm1d(16)
        self.c2, self.b2 = nn.Conv1d(16, 16, 3, padding=1), nn.BatchNorm1d(16)
        self.rnn, self.fc = nn.GRU(16, 12, batch_first=True), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(self.rnn(x.transpose(1, 2))[0][:, -1])


def test_a_group_the_graph_library_cannot_build_is_kept_whole_and_the_others_pruned():
    torch.manual_seed(0)
    net, x = _CRNN().eval(), torch.randn(2, 2, 24)
    small, report = prune_groups(net, x, GroupPruneConfig(rate=0.5))
    assert "cannot build its group" in report.kept_whole["c2"]
    assert {g.name: g.pruned for g in report.groups} == {"c2": 0, "c1": 8}
    assert small.c1.out_channels == small.c2.in_channels == 8 and small(x).shape == (2, 4)


def test_a_plain_mlp_loses_hidden_units_but_never_a_class_score():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.ReLU(), nn.Dropout(0.1),
                        nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    x = torch.randn(2, 3, 8, 8)
    small, report = prune_groups(mlp, x, GroupPruneConfig(rate=0.5))
    assert {g.name: g.pruned for g in report.groups} == {"1": 8, "4": 4}  # "6" returns the scores
    assert [m.out_features for m in small if isinstance(m, nn.Linear)] == [8, 4, 4]
    assert all(g.max_abs_diff <= 1e-5 for g in report.groups)
