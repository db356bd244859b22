"""Policies: which k each clusterable layer gets.

A policy maps layer names to k. The paper's rule-based ones are available by name:

* ``k16``, ``k32``, ``k64`` (any ``k<N>``): the same k for every layer;
* ``/16``, ``/32``, ``/64`` (any ``/<N>``): k proportional to the layer's size,
  k = kept weights of the layer / N (clamped to [2, 65536]), so big layers get many clusters.

A policy may also be an explicit ``{layer: k}`` mapping (what the search produces).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

from rlcompress.clustering.sharing import kept_weight_count

K_MIN, K_MAX = 2, 65536
Policy = Callable[[dict[str, nn.Module]], dict[str, int]]
POLICIES: dict[str, Policy] = {}
RULE_POLICIES = ("/16", "/32", "/64", "k16", "k32", "k64")


def _clamp(k: int) -> int:
    return max(K_MIN, min(K_MAX, int(k)))


def uniform(k: int) -> Policy:
    """Every layer gets ``k`` clusters."""
    return lambda layers: {n: _clamp(k) for n in layers}


def proportional(divisor: int) -> Policy:
    """Each layer gets (kept weights / ``divisor``) clusters."""
    return lambda layers: {n: _clamp(kept_weight_count(m) // divisor) for n, m in layers.items()}


def register_policy(name: str, policy: Policy) -> None:
    """Make ``name`` resolvable by :func:`resolve_policy`."""
    POLICIES[name] = policy


for _n in (16, 32, 64):
    register_policy(f"k{_n}", uniform(_n))
    register_policy(f"/{_n}", proportional(_n))


def resolve_policy(policy: str | dict[str, int], layers: dict[str, nn.Module]) -> dict[str, int]:
    """Turn a policy name or mapping into ``{layer: k}`` for the given clusterable layers."""
    if isinstance(policy, dict):
        missing = [n for n in layers if n not in policy]
        extra = [n for n in policy if n not in layers]
        if missing or extra:
            raise ValueError(f"policy does not match the layers: missing={missing} extra={extra}")
        return _in_range({n: int(policy[n]) for n in layers})
    if policy in POLICIES:
        return POLICIES[policy](layers)
    if m := re.fullmatch(r"k(\d+)", policy):
        _in_range({policy: int(m.group(1))})  # explicit: not clamped as rules' ks are
        return uniform(int(m.group(1)))(layers)
    if (m := re.fullmatch(r"/(\d+)", policy)) and int(m.group(1)) > 0:
        return proportional(int(m.group(1)))(layers)
    raise ValueError(f"unknown policy {policy!r}: use k<N>, /<N>, a registered name or a mapping")


def _in_range(ks: dict[str, int]) -> dict[str, int]:
    bad = {n: k for n, k in ks.items() if not K_MIN <= k <= K_MAX}
    if bad:
        raise ValueError(f"k must be in [{K_MIN}, {K_MAX}]: {bad}")
    return ks
