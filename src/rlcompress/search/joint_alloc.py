"""One-shot allocators in the joint space: a pruning rate per chain and a k per layer.

Two solvers, both pure functions of per-layer tables so that they can be checked against brute
force:

* :func:`joint_knapsack` - the least total value over every (rate, k) policy within the budget,
  solved exactly by dynamic programming over the layers in order. A layer's cost and value
  depend on its own rate (output filters) and on the rate of the chain feeding it (input
  channels); the DP state is the set of chains opened and not yet consumed, with their rates
  (at most one in a CIFAR ResNet or a plain VGG, so the state space stays tiny). Costs are
  integers after rounding *up* to a unit (bytes; for a budget of more than ``max_bins`` units a
  coarser unit), so every solution the DP returns is within the real budget.
* :func:`joint_greedy` - from the unpruned model at the largest k, take the step (one bit less
  at a layer, or the next rate at a chain) whose measured loss grows least per byte saved until
  the policy fits, then spend what is left on the steps back that gain most per byte.

Why our own DP: the coupling of a chain's rate to two layers' costs makes this a
multiple-choice knapsack with a chain structure that no general solver we could depend on
handles exactly without an integer-programming backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Cost = Callable[[int, int, float, float], float]  # (layer, k, rate out, rate in) -> cost
Value = Callable[[int, int, float, float], float]


def joint_knapsack(n: int, producer_of: dict[int, int], prunable: set[int] | list[int],
                   rates: tuple[float, ...], ks: list[int], cost: Cost, value: Value,
                   capacity: float, max_bins: int = 1 << 17) -> tuple[list[float], list[int]]:
    """Exact least-value joint policy: (rate per layer, 0 where no chain; k per layer) with
    ``sum(cost) <= capacity``. Raises ValueError if nothing fits."""
    prunable = set(prunable)
    unit = max(1.0, capacity / max_bins)
    cap = int(math.floor(capacity / unit + 1e-9))
    if cap < 0:
        raise ValueError("no joint policy fits the capacity")
    states: dict[tuple, np.ndarray] = {(): _start(cap)}
    history: list[tuple[list[tuple], dict[tuple, tuple[np.ndarray, np.ndarray]]]] = []
    options = [(ro, k) for ro in rates for k in ks]
    for i in range(n):
        new: dict[tuple, np.ndarray] = {}
        back: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        keys = list(states)
        for s_idx, key in enumerate(keys):
            best = states[key]
            open_ = dict(key)
            r_in = open_.pop(producer_of[i], 0.0) if i in producer_of else 0.0
            for o_idx, (ro, k) in enumerate(options):
                if ro > 0 and i not in prunable:
                    continue
                nxt = tuple(sorted((open_ | ({i: ro} if ro > 0 else {})).items()))
                c = int(math.ceil(cost(i, k, ro, r_in) / unit - 1e-9))
                if c > cap:
                    continue
                cand = np.full(cap + 1, np.inf)
                cand[c:] = best[: cap + 1 - c] + value(i, k, ro, r_in)
                if nxt not in new:
                    new[nxt] = np.full(cap + 1, np.inf)
                    back[nxt] = (np.zeros(cap + 1, np.int32), np.zeros(cap + 1, np.int32))
                better = cand < new[nxt]
                new[nxt][better] = cand[better]
                back[nxt][0][better] = s_idx
                back[nxt][1][better] = o_idx
        history.append((keys, back))
        states = new
    finals = [(float(arr.min()), key) for key, arr in states.items() if np.isfinite(arr.min())]
    if not finals:
        raise ValueError("no joint policy fits the capacity")
    _, key = min(finals, key=lambda t: t[0])
    used = int(np.argmin(states[key]))
    out_rates, out_ks = [0.0] * n, [0] * n
    for i in range(n - 1, -1, -1):
        keys, back = history[i]
        s_idx, o_idx = int(back[key][0][used]), int(back[key][1][used])
        ro, k = options[o_idx]
        prev = keys[s_idx]
        r_in = dict(prev).get(producer_of[i], 0.0) if i in producer_of else 0.0
        out_rates[i], out_ks[i] = ro, k
        used -= int(math.ceil(cost(i, k, ro, r_in) / unit - 1e-9))
        key = prev
    return out_rates, out_ks


def _start(cap: int) -> np.ndarray:
    arr = np.full(cap + 1, np.inf)
    arr[0] = 0.0
    return arr


def joint_greedy(k_table: np.ndarray, rate_table: dict[int, np.ndarray], rates: tuple[float, ...],
                 ks: list[int], total: Callable[[list[float], list[int]], float],
                 limit: float) -> tuple[list[float], list[int]]:
    """Greedy joint allocation from measured separate sensitivities.

    ``k_table[i, j]``: loss with only layer i clustered at ``ks[j]``; ``rate_table[i][p]``: loss
    with only chain i (its producer's index) pruned at ``rates[p]``; ``total(rates, ks)``: the
    budget's cost of a policy. Tables are made monotone (fewer bits or a higher rate never
    helps) before use."""
    kt = np.maximum.accumulate(np.asarray(k_table, float)[:, ::-1], axis=1)[:, ::-1]
    rt = {i: np.maximum.accumulate(np.asarray(t, float)) for i, t in rate_table.items()}
    n = len(kt)
    level, rpos = [len(ks) - 1] * n, {i: 0 for i in rt}

    def policy(lv: list[int], rp: dict[int, int]) -> tuple[list[float], list[int]]:
        return ([rates[rp[i]] if i in rp else 0.0 for i in range(n)], [ks[j] for j in lv])

    def steps(down: bool) -> list[tuple[float, list[int], dict[int, int]]]:
        """(loss change, next levels, next rate positions) of every one-step move."""
        out = []
        for i, j in enumerate(level):
            nj = j - 1 if down else j + 1
            if 0 <= nj < len(ks):
                lv = level[:i] + [nj] + level[i + 1:]
                out.append((kt[i, nj] - kt[i, j], lv, rpos))
        for i, p in rpos.items():
            np_ = p + 1 if down else p - 1
            if 0 <= np_ < len(rates):
                out.append((rt[i][np_] - rt[i][p], level, rpos | {i: np_}))
        return out

    now = total(*policy(level, rpos))
    while now > limit:
        moves = []
        for d, lv, rp in steps(down=True):
            t = total(*policy(lv, rp))
            if t < now:
                moves.append((d / (now - t), lv, rp, t))
        if not moves:
            break  # the most compressed policy; the budget check has failed before this
        _, level, rpos, now = min(moves, key=lambda m: m[0])
    while True:  # spend what is left where the loss falls most per byte added
        moves = []
        for d, lv, rp in steps(down=False):
            t = total(*policy(lv, rp))
            if t <= limit and d < 0:
                moves.append((-d / max(t - now, 1e-12), lv, rp, t))
        if not moves:
            return policy(level, rpos)
        _, level, rpos, now = max(moves, key=lambda m: m[0])
