"""Compress a MobileNetV2 (inverted residuals, depthwise convs, identity adds) with the library API.

    python examples/compress_mobilenetv2.py            # train 3 epochs on CIFAR-10, compress to 100 KB
    python examples/compress_mobilenetv2.py --tiny     # seconds, on generated data (the test)

Structured pruning couples the channels that meet: an expansion conv with the depthwise conv
after it, every projection that writes into a residual sum with every layer that reads it. The
report lists each channel group, its members and what its pruning saved; groups that could not be
proven exact would be listed as kept whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import rlcompress
from rlcompress.models.zoo import MobileNetV2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_vgg import cifar_loaders, tiny_loaders, train  # noqa: E402

TINY = ((1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2))


def build(tiny: bool) -> MobileNetV2:
    """MobileNetV2 at width 0.35 with a 640-wide head (a 0.3M-parameter network), or a toy one."""
    if tiny:
        return MobileNetV2(num_classes=10, settings=TINY, last=64)
    return MobileNetV2(num_classes=10, width=0.35, last=640)


def main(argv: list[str] | None = None) -> dict:
    """Train the MobileNetV2, compress it, reload the file, print and return the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="generated data and tiny budgets")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs before compressing")
    ap.add_argument("--target-size", default="100KB", help="size budget of the compressed file")
    ap.add_argument("--episodes", type=int, default=20, help="search episodes")
    ap.add_argument("--out", default="runs/example-mobilenetv2", help="run directory")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    loaders = tiny_loaders() if args.tiny else cifar_loaders()
    model = build(args.tiny)
    trained = Path(args.out) / "trained.safetensors"  # a rerun skips the training it has done
    if trained.is_file():
        model.load_state_dict(load_file(trained))
    else:
        train(model, loaders[0], 1 if args.tiny else args.epochs)
        trained.parent.mkdir(parents=True, exist_ok=True)
        save_file(model.state_dict(), trained)
    settings = (dict(prune_epochs=1, episodes=4, share_epochs=1, val_images=80, progress=False,
                     precision="fp32", target_size="16KB") if args.tiny else
                dict(prune_epochs=1, episodes=args.episodes, share_epochs=1, val_images=1000,
                     target_size=args.target_size))
    compressed, report = rlcompress.compress(model, *loaders, out=args.out, **settings)
    again = rlcompress.load(report["file"], model=build(args.tiny))
    again.to(memory_format=torch.channels_last)  # the layout compress() evaluated in
    x = next(iter(loaders[2]))[0]
    assert torch.equal(again.eval()(x), compressed.eval()(x))
    summary = {k: v for k, v in report.items() if k != "pruning_groups"}
    groups = report["pruning_groups"]
    summary["convs_shrunk"] = f"{groups['convs_shrunk']}/{groups['convs']}"
    print(json.dumps(summary, indent=1))
    return report


if __name__ == "__main__":
    main()
