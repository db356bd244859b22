"""Size budgets for a per-layer k policy, and the rule that keeps every episode within one.

A budget is a per-layer cost c_l(k), non-decreasing in k, and a limit. While walking the
layers, the k of layer t is capped so that the cost so far, plus c_t(k), plus the minimum
cost of every later layer still fits (AMC's rule): every finished policy meets the budget.

Two budgets:

* ``paper``: the paper's ratio. Cost = kept weights x ceil(log2 k) bits; limit =
  32 x dense weights / target ratio.
* ``file``: bytes of the ``.rlc`` file, estimated from above: packed indices
  (ceil(kept x bits / 8)), the float32 codebook (4 k), a per-layer allowance for the manifest
  entry, plus the measured fixed part (float parameters, header). Entropy coding is only used
  where it is smaller, so the real file is never larger than the estimate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rlcompress.codec.bits import bits_for

MANIFEST_BYTES_PER_LAYER = 256


class BudgetError(ValueError):
    """Raised when a budget cannot be met even with the smallest k everywhere."""


def parse_size(text: str | int | float) -> int:
    """``48KB`` -> 48000, ``48KiB`` -> 49152, ``1.5MB`` -> 1500000, ``1234`` -> 1234 bytes."""
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmM]i?[bB]|[bB])?\s*", str(text))
    if not m:
        raise ValueError(f"cannot read size {text!r}; use e.g. 48KB, 48KiB, 1.5MB or 50000")
    unit = (m.group(2) or "b").lower()
    scale = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20}[unit]
    return int(float(m.group(1)) * scale)


@dataclass
class Budget:
    """Per-layer costs and a limit, in bits (``paper``) or bytes (``file``)."""

    kind: str
    kept: list[int]
    limit: float
    fixed: float = 0.0
    k_min: int = 2
    k_max: int = 256

    def cost(self, layer: int, k: int) -> float:
        """Cost of giving ``layer`` k clusters."""
        bits = bits_for(k)
        if self.kind == "paper":
            return float(self.kept[layer] * bits)
        return math.ceil(self.kept[layer] * bits / 8) + 4 * k + MANIFEST_BYTES_PER_LAYER

    def total(self, ks: list[int]) -> float:
        """Cost of a whole policy (including the fixed part)."""
        return self.fixed + sum(self.cost(i, k) for i, k in enumerate(ks))

    def min_total(self) -> float:
        """Cost with ``k_min`` everywhere: below this no policy exists."""
        return self.total([self.k_min] * len(self.kept))

    def check(self) -> None:
        """Raise :class:`BudgetError` if even the smallest k everywhere does not fit."""
        if self.min_total() > self.limit:
            unit = "bits" if self.kind == "paper" else "bytes"
            raise BudgetError(
                f"budget of {self.limit:.0f} {unit} cannot be met: k={self.k_min} in every layer "
                f"already needs {self.min_total():.0f} {unit}"
            )

    def max_k(self, layer: int, used: float) -> int:
        """Largest k for ``layer`` such that the later layers can still take ``k_min``."""
        rest = sum(self.cost(j, self.k_min) for j in range(layer + 1, len(self.kept)))
        room = self.limit - self.fixed - used - rest
        lo, hi = self.k_min, self.k_max
        if self.cost(layer, lo) > room:
            return self.k_min  # cannot happen after check(); keeps the walk well-defined
        while lo < hi:  # cost is non-decreasing in k: binary search the largest fitting k
            mid = (lo + hi + 1) // 2
            if self.cost(layer, mid) <= room:
                lo = mid
            else:
                hi = mid - 1
        return lo


def paper_budget(kept: list[int], dense_weights: int, target_ratio: float,
                 k_min: int = 2, k_max: int = 256) -> Budget:
    """Budget for a paper-style ratio: 32 x dense weights / sum(kept x bits) >= target."""
    if target_ratio <= 0:
        raise ValueError("target ratio must be positive")
    return Budget("paper", list(kept), 32.0 * dense_weights / target_ratio, 0.0, k_min, k_max)


def file_budget(kept: list[int], fixed_bytes: int, target_bytes: int,
                k_min: int = 2, k_max: int = 256) -> Budget:
    """Budget for the compressed file size in bytes (estimated from above)."""
    return Budget("file", list(kept), float(target_bytes), float(fixed_bytes), k_min, k_max)
