"""Compress your own CNN with the library API: a small VGG-style network on CIFAR-10.

    python examples/compress_vgg.py                 # train 5 epochs, compress to 40 KB
    python examples/compress_vgg.py --tiny          # seconds, on generated data (the test)

The network is a plain user-defined nn.Module, trained here with an ordinary PyTorch loop and
ordinary DataLoaders; rlcompress only sees the model and the loaders.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rlcompress


class SmallVGG(nn.Module):
    """conv-bn-relu blocks with max pooling, then one linear classifier."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def cifar_loaders(batch: int = 128) -> tuple[DataLoader, DataLoader, DataLoader]:
    """CIFAR-10 (found by rlcompress.data: ../shared, ./data or a download) as DataLoaders."""
    data = rlcompress.data.load_data()

    def tensors(split: rlcompress.data.SplitData) -> TensorDataset:
        x = rlcompress.data.to_model_input(split.images, data.mean, data.std, channels_last=False)
        return TensorDataset(x, split.labels)

    return (DataLoader(tensors(data.train), batch, shuffle=True, drop_last=True),
            DataLoader(tensors(data.val), 500), DataLoader(tensors(data.test), 500))


def tiny_loaders() -> tuple[DataLoader, DataLoader, DataLoader]:
    """A learnable 10-class problem of random colour blobs, for a run of seconds."""
    g = torch.Generator().manual_seed(0)

    def make(n: int) -> TensorDataset:
        y = torch.arange(n) % 10
        x = torch.randn(n, 3, 32, 32, generator=g) * 0.5 + (y[:, None, None, None] / 5.0 - 1.0)
        return TensorDataset(x, y)

    return DataLoader(make(160), 32, shuffle=True), DataLoader(make(80), 40), DataLoader(make(80), 40)


def train(model: nn.Module, loader: DataLoader, epochs: int) -> None:
    """The user's own training loop."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


def main(argv: list[str] | None = None) -> dict:
    """Train the VGG, compress it, reload the file, and print the report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tiny", action="store_true", help="generated data and tiny budgets")
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of the VGG")
    ap.add_argument("--target-size", default="40KB", help="size budget of the compressed file")
    ap.add_argument("--out", default="runs/example-vgg", help="run directory")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    loaders = tiny_loaders() if args.tiny else cifar_loaders()
    model = SmallVGG(width=8 if args.tiny else 32)
    train(model, loaders[0], 2 if args.tiny else args.epochs)
    small = dict(prune_epochs=1, episodes=4, share_epochs=1, val_images=80, progress=False,
                 precision="fp32") if args.tiny else {}
    compressed, report = rlcompress.compress(
        model, *loaders, target_size="12KB" if args.tiny else args.target_size, out=args.out, **small
    )
    again = rlcompress.load(report["file"], model=SmallVGG(width=8 if args.tiny else 32))
    x = next(iter(loaders[2]))[0]
    assert torch.equal(again.eval()(x), compressed.eval()(x))
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
