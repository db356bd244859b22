"""Plain ``nn.Module`` networks with the channel patterns of mainstream CNNs, for examples and
tests of structured pruning (torchvision has no CPU build here, so they are written out):

* :class:`ResNet18` - torchvision-style BasicBlocks with 1x1-conv projection shortcuts;
* :class:`MobileNetV2` - inverted residuals (expansion, depthwise, projection, identity adds);
* :class:`DenseNetTiny` - dense blocks whose layers concatenate their outputs, with transitions.

They are ordinary user models (no spec, no registry): rlcompress treats them as it treats a
user's own network. Input: 3 x 32 x 32 (CIFAR-sized stems).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1,
             act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True) if groups > 1 or k == 1 else nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs; a 1x1 conv + BN projection when the shape changes (torchvision style)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 layout (2-2-2-2 BasicBlocks) with a 3x3 CIFAR stem; ``width`` scales channels."""

    def __init__(self, num_classes: int = 10, width: int = 64) -> None:
        super().__init__()
        w = [width, 2 * width, 4 * width, 8 * width]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        blocks, cin = [], w[0]
        for i, c in enumerate(w):
            blocks.append(nn.Sequential(BasicBlock(cin, c, 1 if i == 0 else 2), BasicBlock(c, c)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, 1x1 linear projection, identity add."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   _conv_bn(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al.) with CIFAR strides; ``width`` multiplies every channel count."""

    # expansion t, channels c, repeats n, first stride s (strides of the 32x32 variant)
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, num_classes: int = 10, width: float = 1.0,
                 settings: tuple[tuple[int, int, int, int], ...] | None = None,
                 last: int = 1280) -> None:
        super().__init__()

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        cin = ch(32)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 1)]
        for t, c, n, s in settings or self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(cin, ch(c), s if i == 0 else 1, t))
                cin = ch(c)
        last = ch(last) if width > 1 else last
        layers.append(_conv_bn(cin, last, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class DenseLayer(nn.Module):
    """BN-ReLU-conv3x3 producing ``growth`` channels concatenated to its input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.cat([x, torch.relu(self.bn(self.conv(x)))], 1)


class DenseNetTiny(nn.Module):
    """A stem, two dense blocks (``layers`` each) joined by a 1x1 transition, a linear head."""

    def __init__(self, num_classes: int = 10, growth: int = 12, layers: int = 3,
                 stem: int = 24) -> None:
        super().__init__()
        self.stem = _conv_bn(3, stem, 3)
        c, blocks = stem, []
        for b in range(2):
            block = []
            for _ in range(layers):
                block.append(DenseLayer(c, growth))
                c += growth
            blocks.append(nn.Sequential(*block))
            if b == 0:
                self.transition = nn.Sequential(_conv_bn(c, c // 2, 1), nn.AvgPool2d(2))
                c //= 2
        self.block1, self.block2 = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.block2(self.transition(self.block1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


@torch.no_grad()
def randomise_batchnorm(model: nn.Module, seed: int = 1) -> None:
    """Give every batch norm (1-3d) non-trivial statistics and, where it has them, affine
    parameters (seeded), so an equivalence check cannot pass by a wrong channel map meeting
    identical channels."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
