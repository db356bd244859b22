"""The batch-norm-folded inference copy the search evaluates through."""

from __future__ import annotations

import torch
from torch import nn

from rlcompress.engine.fold import FoldedCopy, folded_pairs
from rlcompress.models import build_model


def _randomise_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_folded_copy_follows_the_model_through_weight_and_statistics_changes():
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).eval()
    _randomise_bn(model)
    folded = FoldedCopy.of(model)
    assert folded is not None and len(folded.pairs) == 19  # every conv of ResNet-20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.net.modules())
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded.refresh()(x), model(x), atol=1e-4, rtol=1e-4)
        model.layer2[0].conv1.weight.mul_(-0.5)  # a new policy: new weights and statistics
        _randomise_bn(model)
        model.linear.weight.add_(0.1)
        before = folded.net(x)
        torch.testing.assert_close(folded.refresh()(x), model(x), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(before, model(x), atol=1e-3)  # the refresh mattered


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        return y if float(y.sum()) > 0 else -y  # data-dependent control flow


def test_untraceable_or_unfoldable_models_are_evaluated_as_they_are():
    assert FoldedCopy.of(_Untraceable()) is None
    shared = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    assert folded_pairs(shared) == [] and FoldedCopy.of(shared) is None
