"""File sizes and encode/decode times of .rlc files for every rule policy, packed vs entropy-coded.

Usage: python benchmarks/codec.py [--model CKPT_OR_NAME] [--tag NAME] [--policies k16 /16 ...]
Writes results/bench/codec_<tag>.json. No fine-tuning: sizes depend on the indices, which
centroid fine-tuning does not change.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

from rlcompress.clustering import RULE_POLICIES, clusterable_layers, resolve_policy, share_model
from rlcompress.codec import load_compressed, save_compressed, size_report
from rlcompress.engine import set_threads
from rlcompress.jobs import resolve_model


def _timed(fn, repeats: int = 3) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    """Measure every policy and encoding and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="resnet20",
                    help="checkpoint path, or a model name (loads the shared pretrained weights)")
    ap.add_argument("--tag", default=None, help="name of the output file (default: from --model)")
    ap.add_argument("--policies", nargs="+", default=list(RULE_POLICIES))
    args = ap.parse_args()
    set_threads(0)
    is_name = not Path(args.model).suffix
    base, spec = resolve_model(args.model, "pretrained" if is_name else None)
    base.eval()
    tag = args.tag or (args.model if is_name else Path(args.model).parent.parent.name)
    rows = []
    x = torch.randn(8, 3, 32, 32)
    with tempfile.TemporaryDirectory() as tmp:
        for policy in args.policies:
            model = copy.deepcopy(base)
            ks = resolve_policy(policy, clusterable_layers(model))
            t_share, _ = _timed(lambda m=model, ks=ks: share_model(m, ks), repeats=1)
            y = model(x)
            for encoding in ("packed", "ans", "auto"):
                path = Path(tmp) / f"{encoding}.rlc"
                t_enc, _ = _timed(lambda p=path, m=model, e=encoding: save_compressed(m, spec, p, e))
                t_dec, (decoded, _) = _timed(lambda p=path: load_compressed(p))
                assert torch.equal(decoded(x), y), "decoded model differs"
                sizes = size_report(model, spec, path.stat().st_size)
                rows.append({"policy": policy, "encoding": encoding, **sizes,
                             "stored_bits_per_weight": round(8 * sum(
                                 e["bytes"] for e in _manifest_layers(path)) / sizes["weights_kept"], 3),
                             "cluster_seconds": round(t_share, 4),
                             "encode_seconds": round(t_enc, 4), "decode_seconds": round(t_dec, 4)})
                r = rows[-1]
                print(f"{policy:5s} {encoding:6s} {r['file_bytes']:8d} B  file x{r['file_ratio']:6.2f}"
                      f"  paper x{r['paper_ratio']:6.2f}  {r['stored_bits_per_weight']:.3f} bits/w"
                      f"  enc {t_enc:.3f}s dec {t_dec:.3f}s", flush=True)
    out = Path(f"results/bench/codec_{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))
    print(f"wrote {out}")


def _manifest_layers(path: Path) -> list[dict]:
    from rlcompress.codec import read_manifest

    return read_manifest(path.read_bytes())["layers"]


if __name__ == "__main__":
    main()
