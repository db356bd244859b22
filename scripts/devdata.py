"""Pack the shared CIFAR-10 JPEG export small enough to travel to the `device` machine.

    python scripts/devdata.py [--test-per-class 10] [--check]

A device call sends the whole working tree, at most 64 MiB, and ../shared does not travel. The
committed files (~50 MB) and the shared .tar.gz (19.7 MB) together overrun it, so this writes
.devdata/cifar10-jpeg.tar.xz (ignored by git): every training image, in the archive's order,
and only the first N test images of each class (trainings on the device run with --no-test;
their checkpoints are evaluated on the whole test split here, by scripts/scratch_baseline.py).
xz shares the JPEG headers across files, which gzip cannot. With --check, the train and
validation splits decoded from both archives are compared by hash (they must be identical:
the validation split is what keeps model selection clean).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import tarfile
import tempfile
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"


def pack(src: Path, dst: Path, test_per_class: int) -> int:
    """Copy ``src`` to an xz tar at ``dst`` without all but ``test_per_class`` test images per
    class; returns the bytes written."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    kept: dict[str, int] = {}
    with tarfile.open(src, "r:*") as tin, tarfile.open(dst, "w:xz", preset=9) as tout:
        for member in tin:
            parts = member.name.split("/")
            if member.isfile() and parts[0] == "test":
                kept[parts[1]] = kept.get(parts[1], 0) + 1
                if kept[parts[1]] > test_per_class:
                    continue
            data = tin.extractfile(member) if member.isfile() else None
            tout.addfile(member, io.BytesIO(data.read()) if data else None)
    return dst.stat().st_size


def split_hashes(source: Path, val_size: int = 5000) -> dict[str, str]:
    """SHA-256 (16 hex digits) of the decoded train and validation splits of ``source``."""
    from rlcompress.data import DataConfig, load_data

    with tempfile.TemporaryDirectory() as cache:
        data = load_data(DataConfig(source=str(source), data_dir=cache, download=False,
                                    val_size=val_size), progress=False)
    out = {}
    for name in ("train", "val"):
        split = getattr(data, name)
        digest = hashlib.sha256(split.images.numpy().tobytes() + split.labels.numpy().tobytes())
        out[name] = digest.hexdigest()[:16]
    return out


def main(argv: list[str] | None = None) -> None:
    """Pack, report the size and optionally check the splits."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=SHARED)
    ap.add_argument("--out", type=Path, default=Path(".devdata/cifar10-jpeg.tar.xz"))
    ap.add_argument("--test-per-class", type=int, default=10)
    ap.add_argument("--check", action="store_true", help="compare the decoded train/val splits")
    args = ap.parse_args(argv)
    print(f"{args.out}: {pack(args.source, args.out, args.test_per_class):,} bytes")
    if args.check:
        a, b = split_hashes(args.source), split_hashes(args.out)
        print("splits identical" if a == b else f"SPLITS DIFFER: {a} vs {b}")
        if a != b:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
