"""The original CIFAR ResNets (He et al. 2016) with option-A shortcuts, rebuilt from a JSON spec.

Parameter names follow akamaster/pytorch_resnet_cifar10 so its checkpoints load directly:
``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``linear``.

Every width is read from the spec, so a physically pruned network (narrower layers, residual
channels that no longer line up one-to-one) is the same class with another spec. The option-A
shortcut is expressed as a channel map: input channel ``src[j]`` of the (strided) block input
is added to output channel ``dst[j]``; the unpruned network's zero padding is the special case
``dst = arange(in) + planes // 4``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ARCH = "cifar_resnet"


class ChannelMapShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride``, then scatter channels into ``out``."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, src: list[int], dst: list[int]) -> None:
        super().__init__()
        if len(src) != len(dst):
            raise ValueError("shortcut src and dst must have the same length")
        if any(not 0 <= s < in_ch for s in src) or any(not 0 <= d < out_ch for d in dst):
            raise ValueError("shortcut channel index out of range")
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.identity = stride == 1 and in_ch == out_ch and src == dst == list(range(in_ch))
        # Non-persistent: the map belongs to the architecture spec, not to the weights.
        self.register_buffer("src", torch.tensor(src, dtype=torch.long), persistent=False)
        self.register_buffer("dst", torch.tensor(dst, dtype=torch.long), persistent=False)
        self.register_buffer("select", channel_matrix(src, dst, in_ch, out_ch), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.identity:
            return x
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return pick_channels(x, self.select)


def channel_matrix(src: list[int], dst: list[int], in_width: int, width: int) -> torch.Tensor:
    """The (in_width, width) 0/1 matrix whose column ``dst[i]`` reads input channel ``src[i]``;
    the other columns read nothing."""
    select = torch.zeros(in_width, width)
    select[torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long)] = 1.0
    return select


def pick_channels(x: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Channels of ``x`` mapped through the 0/1 matrix ``select`` (:func:`channel_matrix`).

    The same values as writing the picked channels into a zero tensor (each output is 1 * x
    plus exact zeros; a zeroed channel only ever meets an addition or a ReLU, where -0 and 0
    agree), as one matrix product over the channel axis: a channel gather (``index_select``)
    on a channels_last tensor was 10x slower on the CPU and returned a contiguous tensor that
    the next convolution converted back; exported to ONNX it is one MatMul."""
    return (x.permute(0, 2, 3, 1) @ select.to(x.dtype)).permute(0, 3, 1, 2)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a channel-map shortcut."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        cin, mid, cout, stride = spec["in"], spec["mid"], spec["out"], spec["stride"]
        self.conv1 = nn.Conv2d(cin, mid, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        # after pruning, conv2 may keep fewer filters than the residual width: filter j then
        # feeds residual channel conv2_dst[j]
        dst2 = list(spec.get("conv2_dst", range(cout)))
        if any(not 0 <= d < cout for d in dst2) or len(set(dst2)) != len(dst2):
            raise ValueError("conv2_dst must be distinct residual channel indices")
        self.conv2 = nn.Conv2d(mid, len(dst2), 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(len(dst2))
        self.scatter = dst2 != list(range(cout))
        self.register_buffer("conv2_dst", torch.tensor(dst2, dtype=torch.long), persistent=False)
        self.register_buffer("conv2_select", channel_matrix(list(range(len(dst2))), dst2,
                                                            len(dst2), cout), persistent=False)
        src, dst = shortcut_map(spec)
        self.shortcut = ChannelMapShortcut(cin, cout, stride, src, dst)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.scatter:
            # residual channels conv2 does not write get exactly 0 added
            return F.relu(self.shortcut(x) + pick_channels(out, self.conv2_select))
        return F.relu(out + self.shortcut(x))


def shortcut_map(block: dict) -> tuple[list[int], list[int]]:
    """The (src, dst) channel lists of a block's shortcut, explicit or implied by option A."""
    sc = block.get("shortcut") or {}
    if "src" in sc:
        return list(sc["src"]), list(sc["dst"])
    offset = sc.get("offset", 0)
    return list(range(block["in"])), [c + offset for c in range(block["in"])]


MAX_WIDTH = 1 << 16
MAX_BLOCKS = 4096


def _int_in(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ValueError(f"spec {what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _int_list(value: object, hi: int, what: str) -> None:
    if not isinstance(value, list) or len(value) > hi:
        raise ValueError(f"spec {what} must be a list of at most {hi} integers")
    for v in value:
        _int_in(v, 0, hi - 1, what)


def validate_spec(spec: dict) -> None:
    """Check every value of a CIFAR ResNet spec before anything is allocated.

    Specs also come from files (``.rlc`` manifests, checkpoint JSON), so types, ranges and the
    chaining of widths are checked here; a bad value is a ``ValueError`` naming the field.
    """
    if not isinstance(spec, dict) or spec.get("arch") != ARCH:
        raise ValueError(f"not a {ARCH} spec: arch={spec.get('arch') if isinstance(spec, dict) else spec!r}")
    _int_in(spec.get("in_channels", 3), 1, MAX_WIDTH, "in_channels")
    _int_in(spec.get("num_classes"), 1, MAX_WIDTH, "num_classes")
    prev = _int_in(spec.get("stem"), 1, MAX_WIDTH, "stem")
    stages, blocks = spec.get("stages"), spec.get("blocks")
    if not isinstance(stages, list) or not 1 <= len(stages) <= 64:
        raise ValueError("spec stages must be a list of 1 to 64 block counts")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= MAX_BLOCKS:
        raise ValueError(f"spec blocks must be a list of 1 to {MAX_BLOCKS} blocks")
    if sum(_int_in(n, 0, MAX_BLOCKS, "stages[]") for n in stages) != len(blocks):
        raise ValueError("spec stages do not add up to the number of blocks")
    for i, b in enumerate(blocks):
        if not isinstance(b, dict):
            raise ValueError(f"spec blocks[{i}] must be an object")
        if _int_in(b.get("in"), 1, MAX_WIDTH, f"blocks[{i}].in") != prev:
            raise ValueError(f"spec blocks[{i}].in={b['in']} does not match the previous width {prev}")
        _int_in(b.get("mid"), 1, MAX_WIDTH, f"blocks[{i}].mid")
        prev = _int_in(b.get("out"), 1, MAX_WIDTH, f"blocks[{i}].out")
        _int_in(b.get("stride"), 1, 2, f"blocks[{i}].stride")
        if "conv2_dst" in b:
            _int_list(b["conv2_dst"], prev, f"blocks[{i}].conv2_dst")
            if not b["conv2_dst"]:
                raise ValueError(f"spec blocks[{i}].conv2_dst is empty")
        sc = b.get("shortcut") or {}
        if not isinstance(sc, dict):
            raise ValueError(f"spec blocks[{i}].shortcut must be an object")
        if "src" in sc or "dst" in sc:
            _int_list(sc.get("src"), b["in"], f"blocks[{i}].shortcut.src")
            _int_list(sc.get("dst"), prev, f"blocks[{i}].shortcut.dst")
        elif "offset" in sc:
            _int_in(sc["offset"], 0, prev - b["in"], f"blocks[{i}].shortcut.offset")
        elif b["in"] > prev:
            raise ValueError(f"spec blocks[{i}]: identity shortcut wider than the block output")


class CifarResNet(nn.Module):
    """CIFAR ResNet built from a spec (see :func:`resnet_spec`)."""

    def __init__(self, spec: dict) -> None:
        super().__init__()
        validate_spec(spec)
        self.spec = spec
        in_ch = spec.get("in_channels", 3)
        self.conv1 = nn.Conv2d(in_ch, spec["stem"], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(spec["stem"])
        blocks = iter(spec["blocks"])
        for s, n in enumerate(spec["stages"], start=1):
            setattr(self, f"layer{s}", nn.Sequential(*[BasicBlock(next(blocks)) for _ in range(n)]))
        self.linear = nn.Linear(spec["blocks"][-1]["out"], spec["num_classes"])
        if not self.linear.weight.is_meta:  # a meta-device build only measures sizes
            self.apply(_kaiming_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        for s in range(1, len(self.spec["stages"]) + 1):
            out = getattr(self, f"layer{s}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def _kaiming_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear | nn.Conv2d):
        nn.init.kaiming_normal_(m.weight)


def resnet_spec(
    depth: int, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), in_channels: int = 3
) -> dict:
    """Architecture spec of the unpruned CIFAR ResNet of ``depth`` = 6n + 2 layers."""
    if (depth - 2) % 6 != 0 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    n = (depth - 2) // 6
    blocks, cin = [], widths[0]
    for s, planes in enumerate(widths):
        for i in range(n):
            stride = 2 if (s > 0 and i == 0) else 1
            block = {"in": cin, "mid": planes, "out": planes, "stride": stride}
            if stride != 1 or cin != planes:
                # option A: planes // 4 zero channels on each side
                block["shortcut"] = {"offset": planes // 4}
            blocks.append(block)
            cin = planes
    return {
        "arch": ARCH,
        "depth": depth,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "stem": widths[0],
        "stages": [n] * len(widths),
        "blocks": blocks,
    }
