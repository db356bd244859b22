"""Structure-aware fuzzing of the .rlc decoder, in a subprocess with an address-space limit."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from rlcompress.clustering import share_model
from rlcompress.codec import save_compressed
from rlcompress.codec.fuzz import fuzz_in_subprocess
from rlcompress.models import build_model, resnet_spec
from rlcompress.pruning import FilterMasks, PruneConfig

# torch alone maps about 1 GB of address space; a decoder that believed a hostile size would
# ask for many GB and fail under this cap instead of swapping the machine
ADDRESS_SPACE = 3 << 30


def small_file(tmp: Path) -> Path:
    """A real file using every feature: masked filters, packed and ANS layers, fp16 codebooks."""
    torch.manual_seed(0)
    spec = resnet_spec(8, widths=(4, 8, 16))
    model = build_model(spec).eval()
    FilterMasks.compute(model, PruneConfig(rate=0.25)).apply(model)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    share_model(model, {n: [2, 3, 5, 16][i % 4] for i, n in enumerate(names)})
    path = tmp / "small.rlc"
    save_compressed(model, spec, path, codebook_dtype="float16")
    return path


def run_fuzz(path: Path, cases: int, seed: int) -> dict:
    result = fuzz_in_subprocess(path, cases, seed, (2, 3, 8, 8), ADDRESS_SPACE)
    assert "died" not in result, f"fuzz process died: {result}"
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS is Linux-only")
def test_decoder_fuzz_no_crashes(tmp_path: Path):
    result = run_fuzz(small_file(tmp_path), cases=1500, seed=0)
    assert result["crashes"] == 0, json.dumps(result["findings"], indent=1)
    counts = result["counts"]
    # every mutation kind was exercised and most hostile edits were refused
    for kind in ("manifest", "header", "content", "raw"):
        assert counts.get(f"{kind}:error", 0) > 0
    assert counts.get("raw:valid", 0) == 0
