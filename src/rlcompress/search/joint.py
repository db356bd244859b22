"""The joint search space: a pruning rate and a k for every layer, under one budget.

Which channels can be pruned is found, not assumed: a *chain* is a conv whose output passes
only through its batch norm and activations or dropouts that map 0 to 0 (ReLU and its kin) into
exactly one ungrouped conv of its kind, or a linear layer that reaches another linear layer the
same way (an MLP's hidden width). Removing filters of the chain's producer (with their bias and
batch-norm channels) and the matching input channels of its consumer is exact. A policy is
scored on the dense model with those channels masked (the consumer's weights for them are zero,
so whatever a pruned channel still carries, a bias through ReLU say, never reaches its output)
and realised later by physically removing them. In a CIFAR ResNet the
chains are the blocks' inner (``mid``) channels; in a VGG-style net every conv-to-conv link and
the hidden layers of its classifier; residual adds and concatenations (channels read by several
layers) are never chains, so those widths stay.

The search walks the clusterable layers in order; at a chain's producer it first chooses the
rate (one of ``rates``, 0 included), then k; elsewhere only k. A layer's kept weights - and so
its cost - follow from its own rate (output filters) and its producer's (input channels), both
chosen by the time it is reached. The projection keeps every episode within the budget: it
first cuts bits (the k-only rule), and only when even ``k_min`` everywhere does not fit raises
the rate of the chain whose next step saves the most bytes, until it does.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlcompress.clustering.sharing import surviving_mask
from rlcompress.codec.format import compactable_bn
from rlcompress.models.shapes import NORMS, PLAIN_CONVS
from rlcompress.pruning.criteria import keep_indices
from rlcompress.search.budget import Budget, BudgetError
from rlcompress.search.env import N_FEATURES, ClusterEnv, action_to_k, k_to_action
from rlcompress.search.evaluator import PolicyEvaluator

# activations with f(0) = 0: a masked channel stays exactly zero through them
_ZERO_PRESERVING = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Hardtanh,
                    nn.Mish, nn.Tanh, nn.ELU, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_ZERO_FUNCTIONS = {F.relu, F.relu6, F.leaky_relu, F.silu, F.gelu, F.hardswish, F.hardtanh,
                   F.mish, F.elu, torch.relu, torch.tanh, F.tanh, F.dropout}
JOINT_FEATURES = N_FEATURES + 3


@dataclass(frozen=True)
class Chain:
    """A producer conv whose filters can be removed exactly, its batch norm and its consumer."""

    producer: str
    bn: str | None
    consumer: str


def parse_rates(text: str | list[float] | tuple[float, ...]) -> tuple[float, ...]:
    """``"0,0.2,0.4"`` -> (0.0, 0.2, 0.4); 0 is always offered; every rate in [0, 1)."""
    vals = [float(v) for v in (text.split(",") if isinstance(text, str) else text) if str(v).strip()]
    if any(not 0.0 <= v < 1.0 for v in vals):
        raise ValueError(f"pruning rates must be in [0, 1), got {vals}")
    return tuple(sorted({0.0, *vals}))




def _zero_preserving(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _ZERO_PRESERVING)
    if node.op == "call_function":
        return node.target in _ZERO_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_", "tanh")


def _only_user(node: torch.fx.Node) -> torch.fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _kind(node: torch.fx.Node | None, modules: dict[str, nn.Module]) -> type | None:
    """The layer class of an ungrouped plain conv or a linear layer (what a chain links), else
    None: a chain's ends must be of one kind (a conv's channels are not a linear's features)."""
    if node is None or node.op != "call_module":
        return None
    m = modules[node.target]
    if isinstance(m, nn.Linear) or (isinstance(m, PLAIN_CONVS) and m.groups == 1):
        return next(c for c in (nn.Linear, *PLAIN_CONVS) if isinstance(m, c))
    return None


def prunable_chains(model: nn.Module) -> list[Chain]:
    """Every chain of ``model`` (see the module docstring), found by tracing it with torch.fx.
    An untraceable model has none (the search then chooses k only)."""
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises many types on dynamic control flow
        return []
    modules = dict(model.named_modules())
    chains = []
    for node in graph.nodes:
        kind = _kind(node, modules)
        if kind is None:
            continue
        nxt, bn = _only_user(node), None
        if nxt is not None and nxt.op == "call_module" and isinstance(modules[nxt.target], NORMS):
            if not modules[nxt.target].affine:
                continue  # no scale and shift to zero: a removed channel is not zero after it
            bn, nxt = nxt.target, _only_user(nxt)
        while nxt is not None and _zero_preserving(nxt, modules):
            nxt = _only_user(nxt)
        if _kind(nxt, modules) is kind:
            chains.append(Chain(str(node.target), bn, str(nxt.target)))
    return chains


def channel_float_bytes(modules: dict[str, nn.Module], chain: Chain, compact_bn: bool) -> float:
    """File bytes of the float parameters that one output channel of ``chain``'s producer
    carries: its bias and its norm's per-channel tensors (scale and shift only, in float32,
    where ``compact_bn`` stores an affine batch norm with running statistics that way)."""
    producer = modules[chain.producer]
    total = 0.0
    if getattr(producer, "bias", None) is not None:
        total += producer.bias.element_size()
    norm = modules[chain.bn] if chain.bn else None
    if norm is None:
        return total
    width = producer.weight.shape[0]
    if compact_bn and "" in compactable_bn(norm):  # stored as two float32 values
        return total + 2 * 4
    return total + sum(t.element_size() for t in norm.state_dict().values()
                       if t.dim() == 1 and t.shape[0] == width)


class JointSpace:
    """Rates and ks of a dense model's clusterable layers ``names`` under ``budget`` (whose
    ``kept`` are the dense counts and whose fixed part is the dense model's). Chains touching a
    layer of ``protect`` are not offered (those layers keep every channel).

    With ``credit_floats`` (a file budget), the float parameters of each chain's output channels
    (the producer's bias, its norm's scale, shift and statistics; two values with
    ``compact_bn``) move from the fixed part to the producer's cost and are charged for the kept
    channels only: a pruned channel's floats leave the file. Without it the dense model's are
    charged at every rate (before session 25): an upper bound that, at 40x on ResNet-20, left
    3 KB of a 27 KB budget unspent, more than the whole room above the smallest file."""

    def __init__(self, model: nn.Module, names: list[str], budget: Budget,
                 rates: tuple[float, ...], criterion: str = "fpgm",
                 protect: tuple[str, ...] = (), credit_floats: bool = False,
                 compact_bn: bool = False) -> None:
        self.names, self.budget, self.rates = list(names), budget, tuple(rates)
        modules = dict(model.named_modules())
        index = {n: i for i, n in enumerate(self.names)}
        # a protected layer keeps its channels: no chain that it produces or consumes
        chains = [c for c in prunable_chains(model)
                  if c.producer in index and c.consumer in index and index[c.producer] < index[c.consumer]
                  and c.producer not in protect and c.consumer not in protect]
        self.chain_at = {index[c.producer]: c for c in chains}
        self.producer_of = {index[c.consumer]: index[c.producer] for c in chains}
        self.weights = [modules[n].weight.detach() for n in self.names]
        self._keep: dict[tuple[int, float], torch.Tensor] = {}
        for i in self.chain_at:
            for r in self.rates:
                self._keep[(i, r)] = keep_indices(self.weights[i], r, criterion)
        self._kept: dict[tuple[int, float, float], int] = {}
        self.channel_bytes = {i: channel_float_bytes(modules, c, compact_bn)
                              for i, c in self.chain_at.items()
                              if credit_floats and budget.kind == "file"}
        if self.channel_bytes:
            dense = self._extra([0.0] * len(self.names))
            self.budget = dataclasses.replace(budget, fixed=budget.fixed - sum(dense),
                                              extra=dense)
        self.check()

    def _extra(self, rates: list[float]) -> list[float]:
        """Per layer, the float bytes of its kept output channels (credited chains only)."""
        return [self.channel_bytes.get(i, 0.0) * self.kept_channels(i, rates[i])
                for i in range(len(self.names))]

    def kept_channels(self, layer: int, rate: float) -> int:
        """Output channels ``layer`` keeps at ``rate``."""
        keep = self.keep(layer, rate)
        return int(self.weights[layer].shape[0] if keep is None else keep.numel())

    @property
    def prunable(self) -> list[int]:
        """Indices of the layers that lead a chain (where a rate is chosen)."""
        return sorted(self.chain_at)

    def keep(self, layer: int, rate: float) -> torch.Tensor | None:
        """Indices of the output filters ``layer`` keeps at ``rate`` (None: all of them)."""
        return self._keep[(layer, rate)] if layer in self.chain_at and rate > 0 else None

    def in_rate(self, layer: int, rates: list[float]) -> float:
        """The rate of the chain feeding ``layer`` (0 if none)."""
        p = self.producer_of.get(layer)
        return rates[p] if p is not None and p < len(rates) else 0.0

    def sub_weight(self, layer: int, r_out: float, r_in: float) -> torch.Tensor:
        """The layer's weight as the physically pruned layer would hold it."""
        return self.slice_like(layer, self.weights[layer], r_out, r_in)

    def slice_like(self, layer: int, t: torch.Tensor, r_out: float, r_in: float) -> torch.Tensor:
        """``t`` (shaped like the layer's weight) with the pruned rows and columns removed."""
        out = self.keep(layer, r_out)
        if out is not None:
            t = t[out]
        p = self.producer_of.get(layer)
        if p is not None and r_in > 0:
            t = t[:, self.keep(p, r_in)]
        return t

    def kept_at(self, layer: int, r_out: float, r_in: float) -> int:
        """Surviving weights of ``layer`` with these output and input rates."""
        key = (layer, r_out, r_in)
        if key not in self._kept:
            self._kept[key] = int(surviving_mask(self.sub_weight(layer, r_out, r_in)).sum())
        return self._kept[key]

    def kept(self, rates: list[float]) -> list[int]:
        """Surviving weights of every layer under ``rates`` (one per layer, 0 where no chain)."""
        return [self.kept_at(i, rates[i], self.in_rate(i, rates)) for i in range(len(self.names))]

    def budget_for(self, rates: list[float]) -> Budget:
        """The budget with each layer's cost charged for its kept weights (and, where credited,
        its kept channels' floats) under ``rates``."""
        extra = self._extra(rates) if self.channel_bytes else None
        return dataclasses.replace(self.budget, kept=self.kept(rates), extra=extra)

    def layer_cost(self, layer: int, k: int, r_out: float, r_in: float) -> float:
        """The budget's cost of ``layer`` at ``k`` with these output and input rates."""
        kept = list(self.budget.kept)
        kept[layer] = self.kept_at(layer, r_out, r_in)
        floats = self.channel_bytes.get(layer, 0.0) * self.kept_channels(layer, r_out)
        return dataclasses.replace(self.budget, kept=kept, extra=None).cost(layer, k) + floats

    def max_rates(self) -> list[float]:
        """The largest offered rate at every chain, 0 elsewhere."""
        return [self.rates[-1] if i in self.chain_at else 0.0 for i in range(len(self.names))]

    def check(self) -> None:
        """Raise :class:`BudgetError` if the largest rates and ``k_min`` everywhere do not fit."""
        try:
            self.budget_for(self.max_rates()).check()
        except BudgetError as exc:
            raise BudgetError(f"{exc}, even with every prunable layer pruned at "
                              f"{self.rates[-1]}") from None

    def project(self, rates: list[float], ks: list[int]) -> tuple[list[float], list[int]]:
        """A policy within the budget: raise rates while even ``k_min`` does not fit (each step
        where it saves the most), then cut bits by the k-only projection."""
        rates = list(rates)
        b = self.budget_for(rates)
        while b.min_total() > b.limit:
            steps = []
            for i in self.prunable:
                pos = self.rates.index(rates[i])
                if pos + 1 < len(self.rates):
                    trial = rates[:i] + [self.rates[pos + 1]] + rates[i + 1:]
                    steps.append((b.min_total() - self.budget_for(trial).min_total(), -i, trial))
            if not steps:
                break  # cannot happen after check()
            rates = max(steps, key=operator.itemgetter(0, 1))[2]
            b = self.budget_for(rates)
        return rates, b.project(ks)

    def rate_of(self, action: float) -> float:
        """Map an action in [0, 1] to the nearest offered rate."""
        a = float(np.clip(action, 0.0, 1.0))
        return self.rates[int(round(a * (len(self.rates) - 1)))]

    def rate_action(self, rate: float) -> float:
        """Inverse of :meth:`rate_of`."""
        return self.rates.index(rate) / max(len(self.rates) - 1, 1)


class JointEvaluator(PolicyEvaluator):
    """The search's reward for a joint policy: the dense model with each chain's pruned filters
    masked (weights, batch-norm scale and shift), every layer clustered as the physically
    pruned layer would be, then batch norm re-estimated and the subset evaluated."""

    def __init__(self, space: JointSpace, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.space = space
        self._bn = {c.bn: (self.modules[c.bn].weight.detach().clone(),
                           self.modules[c.bn].bias.detach().clone())
                    for c in space.chain_at.values() if c.bn}

    def joint_weight(self, layer: int, k: int, r_out: float, r_in: float) -> torch.Tensor:
        """Dense-shaped weight of ``layer``: pruned positions zero, the rest clustered to ``k``
        (``k`` = 0: left in float)."""
        name = self.layers[layer]
        if r_out == 0 and r_in == 0:
            return self.clustered_weight(name, k)
        key = (name, k, r_out, r_in)
        if key not in self._weights:
            sp = self.space
            sub = sp.sub_weight(layer, r_out, r_in)
            if k:
                imp = self.importance.get(name)
                if imp is not None:
                    imp = sp.slice_like(layer, imp, r_out, r_in)
                sub = self.cluster(sub, k, name, imp)
            full = torch.zeros_like(sp.weights[layer])
            rows = sp.keep(layer, r_out)
            rows = torch.arange(full.shape[0]) if rows is None else rows
            p = sp.producer_of.get(layer)
            cols = sp.keep(p, r_in) if p is not None and r_in > 0 else torch.arange(full.shape[1])
            full[rows.view(-1, 1), cols.view(1, -1)] = sub
            self._weights[key] = full
        return self._weights[key]

    def load_policy(self, policy: dict[str, int]) -> None:
        """Write the policy's weights (and the current :attr:`rates`' masks) into the model."""
        rates = [float(self.rates.get(n, 0.0)) for n in self.layers]
        for i, name in enumerate(self.layers):
            w = self.joint_weight(i, int(policy[name]), rates[i], self.space.in_rate(i, rates))
            self.modules[name].weight.copy_(w)
        for i, chain in self.space.chain_at.items():
            if not chain.bn:
                continue
            bn = self.modules[chain.bn]
            weight, bias = self._bn[chain.bn]
            bn.weight.copy_(weight)
            bn.bias.copy_(bias)
            keep = self.space.keep(i, rates[i])
            if keep is not None:
                drop = torch.ones(len(weight), dtype=torch.bool)
                drop[keep] = False
                bn.weight[drop] = 0
                bn.bias[drop] = 0

    @torch.inference_mode()
    def joint_scores(self, ks: dict[str, int], rates: dict[str, float], kl: bool = True) -> dict[str, float]:
        """:meth:`scores` of the policy ``ks`` with the chains pruned at ``rates``."""
        self.rates = dict(rates)
        try:
            return self.scores(ks, kl)
        finally:
            self.rates = {}


class JointEnv(ClusterEnv):
    """Chooses a rate (at chain producers) and a k for every layer; the budget is kept by the
    joint projection at the end of the episode. State: the k-only state plus whether this step
    chooses a rate, the layer's chosen rate and the rate of the chain feeding it."""

    def __init__(self, features: np.ndarray, layers: list[str], space: JointSpace,
                 evaluate: Callable[[dict[str, int], dict[str, float]], float],
                 size_weight: float = 0.0, snap: bool = True) -> None:
        # the base walk sees the most pruned budget: it is the one that must be feasible, and
        # its per-layer minimum costs are what the later layers need at least
        super().__init__(features, layers, space.budget_for(space.max_rates()), evaluate,
                         size_weight, snap, "project")
        self.space = space
        self.steps = [(i, kind) for i in range(len(layers))
                      for kind in (("rate", "k") if i in space.chain_at else ("k",))]
        self.observation_space = gym.spaces.Box(0.0, 1.0, (JOINT_FEATURES,), np.float32)
        self.rates: list[float] = []

    def _obs_joint(self, s: int, rates: list[float], ks: list[int]) -> np.ndarray:
        s = min(s, len(self.steps) - 1)
        layer, kind = self.steps[s]
        full = rates + [0.0] * (len(self.layers) - len(rates))
        b = self.space.budget_for(full)
        used = sum(b.cost(j, k) for j, k in enumerate(ks))
        prev = k_to_action(ks[-1], b.k_min, b.k_max) if ks else 0.0
        base = self._obs_at(layer, used, prev)
        r_max = max(self.space.rates[-1], 1e-9)
        extra = [float(kind == "rate"), full[layer] / r_max, self.space.in_rate(layer, full) / r_max]
        return np.concatenate([base, np.asarray(extra, np.float32)]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # noqa: ANN201
        """Start an episode at the first layer."""
        super().reset(seed=seed)
        self.rates = []
        return self._obs_joint(0, [], []), {}

    def step(self, action: np.ndarray):  # noqa: ANN201
        """Choose the current layer's rate or k; the last step projects and evaluates."""
        a = float(np.clip(np.asarray(action, dtype=np.float64).ravel()[0], 0.0, 1.0))
        layer, kind = self.steps[self.t]
        if kind == "rate":
            self.rates.append(self.space.rate_of(a))
            info: dict = {"rate": self.rates[-1]}
        else:
            if len(self.rates) <= layer:
                self.rates.append(0.0)
            b = self.budget
            pow2 = self.snap
            k = action_to_k(a, b.k_min, b.k_max, pow2)
            self.ks.append(k)
            info = {"k": k}
        self.t += 1
        done = self.t == len(self.steps)
        reward = 0.0
        if done:
            rates, ks = self.space.project(self.rates, self.ks)
            b = self.space.budget_for(rates)
            if self.snap:  # the same cost for more clusters: stays within the budget
                ks = [b.snap_up(i, k) for i, k in enumerate(ks)]
            self.rates, self.ks = rates, ks
            policy = dict(zip(self.layers, ks, strict=True))
            rate_map = {self.layers[i]: rates[i] for i in self.space.prunable}
            acc = float(self.evaluate(policy, rate_map))
            cost = b.total(ks)
            frac = cost / b.limit
            reward = acc / 100.0 - self.size_weight * frac
            info = {"policy": policy, "rates": rate_map, "accuracy": acc, "cost": cost,
                    "budget_fraction": frac}
            self.last_info = info
        return self._obs_joint(self.t, self.rates, self.ks), reward, done, False, info

    def trajectory(self, ks: list[int]) -> list[tuple[np.ndarray, float, np.ndarray, bool]]:
        """The transitions of the episode just played (its projected rates and ``ks``)."""
        return self.joint_trajectory(self.rates, ks)

    def demo_actions(self, demo: tuple[list[float], list[int]]) -> list[float]:
        """The actions, one per step, that play the policy ``demo`` = (rates, ks)."""
        return [a for _, a, _, _ in self.joint_trajectory(*demo)]

    def joint_trajectory(self, rates: list[float], ks: list[int]) -> list[tuple[np.ndarray, float, np.ndarray, bool]]:
        """(state, action, next state, done) of the episode that produced (rates, ks)."""
        out, r_so_far, k_so_far = [], [], []
        b = self.space.budget
        for s, (layer, kind) in enumerate(self.steps):
            state = self._obs_joint(s, r_so_far, k_so_far)
            if kind == "rate":
                r_so_far.append(rates[layer])
                act = self.space.rate_action(rates[layer])
            else:
                if len(r_so_far) <= layer:
                    r_so_far.append(0.0)
                k_so_far.append(ks[layer])
                act = k_to_action(ks[layer], b.k_min, b.k_max)
            done = s == len(self.steps) - 1
            out.append((state, act, self._obs_joint(s + 1, r_so_far, k_so_far), done))
        return out


def rates_list(space: JointSpace, rate_map: dict[str, float]) -> list[float]:
    """Per-layer rates (0 where no chain) from a {producer: rate} map."""
    return [float(rate_map.get(n, 0.0)) if i in space.chain_at else 0.0
            for i, n in enumerate(space.names)]


def uniform_joint(space: JointSpace, rate: float) -> tuple[list[float], list[int]]:
    """Every chain at ``rate`` (the nearest offered) and the largest uniform k that fits."""
    r = min(space.rates, key=lambda v: (abs(v - rate), v))
    rates = [r if i in space.chain_at else 0.0 for i in range(len(space.names))]
    rates, _ = space.project(rates, [space.budget.k_min] * len(space.names))
    b = space.budget_for(rates)
    return rates, [b.uniform_k()] * len(space.names)



def joint_demos(space: JointSpace, layers: dict[str, nn.Module]) -> list[tuple[list[float], list[int]]]:
    """Warm-up demonstrations: every offered uniform rate with the largest uniform k that fits,
    then the paper's k rules unpruned where they fit."""
    from rlcompress.clustering.policies import RULE_POLICIES, resolve_policy

    out: list[tuple[list[float], list[int]]] = []
    for r in space.rates:
        demo = uniform_joint(space, r)
        if demo not in out:
            out.append(demo)
    zero = [0.0] * len(space.names)
    b = space.budget_for(zero)
    for rule in RULE_POLICIES:
        ks = resolve_policy(rule, layers)
        k_list = [ks[n] for n in space.names]
        if b.total(k_list) <= b.limit and (zero, k_list) not in out:
            out.append((zero, k_list))
    return out


def prunes_nothing(policy: dict) -> bool:
    """Whether a searched policy (a ``best`` record, ``rate`` per chain) leaves every chain
    whole, so that there is nothing to prune or recover from."""
    return not any(float(r) > 0 for r in (policy.get("rate") or {}).values())
