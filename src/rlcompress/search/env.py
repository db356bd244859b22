"""The search environment: one episode walks the clusterable layers and picks k for each.

State of layer t (every entry min-max normalised to [0, 1], in the AMC/HAQ spirit):
index, is-linear, in channels, out channels, kernel size, stride, log kept weights, log MACs,
budget used so far, budget the later layers need at minimum, and the previous action.

Action a in [0, 1] maps to k = round(exp(log k_min + a (log k_max - log k_min))), finer where k
is small; with ``snap`` (the default) rounded to whole bits, i.e. k a power of two, under either
budget: both charge ceil(log2 k) bits per index, so k = 20 would pay for 5 bits and use 4.3
(with any integer k, DDPG's 16x files used 59 KB of a 68 KB budget, the allocators' 64 KB). The
k is then capped by the budget rule (see ``budget.py``), so every episode's policy meets the
budget, and raised to the largest k of the same cost (under a paper budget). The reward
arrives at the end of the episode: the policy's accuracy on the validation subset, in [0, 1], minus ``size_weight`` x the fraction
of the budget used (0 by default: the budget is a hard constraint and accuracy is the goal).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlcompress.search.budget import Budget

N_FEATURES = 11


def action_to_k(action: float, k_min: int, k_max: int, pow2: bool = False) -> int:
    """Map an action in [0, 1] to an integer k on a log scale (to the nearest power of two
    in log terms with ``pow2``, i.e. to a whole number of bits)."""
    a = float(np.clip(action, 0.0, 1.0))
    log_k = math.log(k_min) + a * (math.log(k_max) - math.log(k_min))
    if pow2:
        k = 2 ** round(log_k / math.log(2))
        return int(min(max(k, k_min), k_max))
    return int(round(math.exp(log_k)))


def k_to_action(k: int, k_min: int, k_max: int) -> float:
    """Inverse of :func:`action_to_k` (for logging and for planting policies)."""
    return (math.log(k) - math.log(k_min)) / (math.log(k_max) - math.log(k_min))


@torch.no_grad()
def layer_features(
    model: nn.Module, layers: list[str], kept: list[int], input_shape: tuple[int, ...]
) -> np.ndarray:
    """Static features per layer (columns 0-7 of the state), min-max normalised."""
    modules = dict(model.named_modules())
    spatial: dict[str, int] = {}

    def positions(m: nn.Module, o: torch.Tensor) -> int:
        # a conv slides over (N, C, *space); a linear layer over every position before its
        # features (tokens of a transformer block, say)
        return int(np.prod(o.shape[1:-1] if isinstance(m, nn.Linear) else o.shape[2:]))

    hooks = [modules[n].register_forward_hook(
        lambda m, i, o, n=n: spatial.__setitem__(n, positions(m, o))) for n in layers]
    was = model.training
    model.eval()
    model(torch.zeros(input_shape))
    model.train(was)
    for h in hooks:
        h.remove()
    rows = []
    for i, name in enumerate(layers):
        m = modules[name]
        is_lin = isinstance(m, nn.Linear)
        cin = m.in_features if is_lin else m.in_channels
        cout = m.out_features if is_lin else m.out_channels
        kernel = 1 if is_lin else m.kernel_size[0]
        stride = 1 if is_lin else m.stride[0]
        # a layer whose weight the model uses without calling it (an attention block's output
        # projection, applied by F.multi_head_attention_forward) was never seen: count it once
        macs = kept[i] * spatial.get(name, 1)
        rows.append([i, float(is_lin), cin, cout, kernel, stride, math.log(kept[i] + 1),
                     math.log(macs + 1)])
    f = np.asarray(rows, dtype=np.float64)
    lo, hi = f.min(axis=0), f.max(axis=0)
    return ((f - lo) / np.where(hi > lo, hi - lo, 1.0)).astype(np.float32)


class ClusterEnv(gym.Env):
    """Gymnasium environment choosing k per layer under a budget."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        layers: list[str],
        budget: Budget,
        evaluate: Callable[[dict[str, int]], float],
        size_weight: float = 0.0,
        snap: bool = True,
        rule: str = "cap",
    ) -> None:
        super().__init__()
        budget.check()
        self.features, self.layers, self.budget = features, list(layers), budget
        self.evaluate, self.size_weight, self.snap = evaluate, size_weight, snap
        if rule not in ("cap", "project"):
            raise ValueError(f"unknown budget rule {rule!r}; use cap or project")
        self.rule = rule
        self.observation_space = gym.spaces.Box(0.0, 1.0, (N_FEATURES,), np.float32)
        self.action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        self.t, self.used, self.prev, self.ks = 0, 0.0, 0.0, []
        self.last_info: dict = {}

    def _obs(self) -> np.ndarray:
        return self._obs_at(self.t, self.used, self.prev)

    def _obs_at(self, t: int, used: float, prev: float) -> np.ndarray:
        t = min(t, len(self.layers) - 1)
        span = max(self.budget.limit - self.budget.fixed, 1e-9)
        rest = sum(self.budget.cost(j, self.budget.k_min) for j in range(t + 1, len(self.layers)))
        dyn = [min(used / span, 1.0), min(rest / span, 1.0), prev]
        return np.concatenate([self.features[t], np.asarray(dyn, np.float32)]).astype(np.float32)

    def trajectory(self, ks: list[int]) -> list[tuple[np.ndarray, float, np.ndarray, bool]]:
        """(state, action, next state, done) of an episode that chose ``ks``: what the agent
        learns from, consistent with the policy that was evaluated (after cap or projection)."""
        out, used, prev = [], 0.0, 0.0
        for t, k in enumerate(ks):
            s = self._obs_at(t, used, prev)
            used += self.budget.cost(t, k)
            prev = k_to_action(k, self.budget.k_min, self.budget.k_max)
            out.append((s, prev, self._obs_at(t + 1, used, prev), t == len(ks) - 1))
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # noqa: ANN201
        """Start an episode at the first layer."""
        super().reset(seed=seed)
        self.t, self.used, self.prev, self.ks = 0, 0.0, 0.0, []
        return self._obs(), {}

    def step(self, action: np.ndarray):  # noqa: ANN201
        """Choose k for the current layer; the last step evaluates the whole policy."""
        a = float(np.clip(np.asarray(action, dtype=np.float64).ravel()[0], 0.0, 1.0))
        pow2 = self.snap
        k = action_to_k(a, self.budget.k_min, self.budget.k_max, pow2)
        if self.rule == "cap":
            k = min(k, self.budget.max_k(self.t, self.used))
        if self.snap:
            k = self.budget.snap_up(self.t, k)
        self.ks.append(k)
        self.used += self.budget.cost(self.t, k)
        self.prev = k_to_action(k, self.budget.k_min, self.budget.k_max)
        self.t += 1
        done = self.t == len(self.layers)
        reward, info = 0.0, {"k": k}
        if done:
            if self.rule == "project":
                self.ks = self.budget.project(self.ks)
                self.used = self.budget.total(self.ks) - self.budget.fixed
            policy = dict(zip(self.layers, self.ks, strict=True))
            acc = float(self.evaluate(policy))
            frac = (self.budget.fixed + self.used) / self.budget.limit
            reward = acc / 100.0 - self.size_weight * frac
            info = {"k": k, "policy": policy, "accuracy": acc, "cost": self.budget.fixed + self.used,
                    "budget_fraction": frac}
            self.last_info = info
        return self._obs(), reward, done, False, info
