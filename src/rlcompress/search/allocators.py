"""One-shot k allocators: a policy computed from measured sensitivities, not learned.

The baselines a learned policy has to beat at equal size (registry :data:`ALLOCATORS`, usable as
``rlcompress search --strategy NAME``; the search plays the allocated policy as its one episode,
so the budget, logging and summary are the same as for DDPG):

* ``uniform``: the largest k every layer can take within the budget.
* ``greedy``: per-layer sensitivity - the KL divergence of the model's outputs from the
  uncompressed model's on the validation subset with only that layer clustered at each k
  (whole bits) - then, from the largest k everywhere, halve k where the loss grows least per
  byte saved until the policy fits, and spend what is left doubling k where the loss falls most
  per byte added.
* ``hessian`` (HAWQ-V2/V3 style): per layer the Hutchinson estimate of the Hessian trace of the
  training loss (mean over the layer's weights) times the squared clustering error
  ``||W - Q_k(W)||^2`` for each k, then the policy of least total that fits, solved exactly as a
  multiple-choice knapsack by dynamic programming over the (integer) costs.

In the joint space (``AllocContext.space``, a search with ``--prune-rates``) each allocator
also chooses a pruning rate per chain (:mod:`rlcompress.search.joint_alloc`): ``uniform`` keeps
every layer whole at the largest uniform k (pruning only if even k_min does not fit);
``greedy`` adds per-chain sensitivities (KL with only that chain pruned) to its moves;
``hessian`` charges pruned weights as quantised to zero (trace x ``||W - Q(W_pruned)||^2``) and
solves the coupled choice exactly (:func:`~rlcompress.search.joint_alloc.joint_knapsack`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlcompress.data import ImageData
from rlcompress.data.loaders import LoaderData
from rlcompress.engine.batches import calibration_batches
from rlcompress.search.budget import Budget
from rlcompress.search.evaluator import PolicyEvaluator
from rlcompress.search.joint import JointEvaluator, JointSpace, uniform_joint
from rlcompress.search.joint_alloc import joint_greedy, joint_knapsack


@dataclass
class AllocContext:
    """What an allocator may measure: the model, its clusterable layers, the budget, the data,
    and the search's evaluator (clustering, batch-norm re-estimation and validation subset)."""

    model: nn.Module
    names: list[str]
    budget: Budget
    data: ImageData | LoaderData
    evaluator: PolicyEvaluator
    seed: int = 0
    hutchinson_samples: int = 16
    hessian_images: int = 256
    space: JointSpace | None = None

    def options(self) -> list[int]:
        """Candidate k: whole bits between the budget's k_min and k_max."""
        lo, hi = math.ceil(math.log2(self.budget.k_min)), math.floor(math.log2(self.budget.k_max))
        return [2**b for b in range(max(lo, 1), hi + 1)]


# k per layer; in the joint space (rate per layer, 0 where no chain; k per layer)
Allocation = list[int] | tuple[list[float], list[int]]
Allocator = Callable[[AllocContext], Allocation]
ALLOCATORS: dict[str, Allocator] = {}


def register_allocator(name: str) -> Callable[[Allocator], Allocator]:
    """Decorator adding an allocator to the registry under ``name``."""

    def wrap(fn: Allocator) -> Allocator:
        ALLOCATORS[name] = fn
        return fn

    return wrap


@register_allocator("uniform")
def uniform(ctx: AllocContext) -> Allocation:
    """The largest k that fits when every layer takes it (joint: unpruned where that fits)."""
    if ctx.space is not None:
        return uniform_joint(ctx.space, 0.0)
    return [ctx.budget.uniform_k()] * len(ctx.names)


def sensitivity_table(ctx: AllocContext) -> np.ndarray:
    """KL divergence to the uncompressed outputs with one layer clustered, [layer, option]."""
    opts = ctx.options()
    table = np.zeros((len(ctx.names), len(opts)))
    for i, name in enumerate(ctx.names):
        for j, k in enumerate(opts):
            policy = {n: 0 for n in ctx.names} | {name: k}
            table[i, j] = ctx.evaluator.scores(policy)["kl"]
    return table


@register_allocator("greedy")
def greedy(ctx: AllocContext) -> Allocation:
    """From the largest k, halve k where the measured loss grows least per byte saved."""
    opts, budget = ctx.options(), ctx.budget
    if ctx.space is not None:
        return _greedy_joint(ctx, opts)
    table = np.maximum.accumulate(sensitivity_table(ctx)[:, ::-1], axis=1)[:, ::-1]
    level = [len(opts) - 1] * len(ctx.names)  # index into opts, per layer

    def ks() -> list[int]:
        return [opts[j] for j in level]

    while budget.total(ks()) > budget.limit:
        best, pick = math.inf, -1
        for i, j in enumerate(level):
            if j == 0:
                continue
            saved = budget.cost(i, opts[j]) - budget.cost(i, opts[j - 1])
            rise = (table[i, j - 1] - table[i, j]) / max(saved, 1e-12)
            if rise < best:
                best, pick = rise, i
        if pick < 0:
            break  # k_min everywhere; the budget check has already failed in that case
        level[pick] -= 1
    return _fill(level, opts, table, budget)


def _fill(level: list[int], opts: list[int], table: np.ndarray, budget: Budget) -> list[int]:
    """Spend what the halving left: double k where the loss falls most per byte added, while
    the policy still fits."""
    while True:
        best, pick = 0.0, -1
        for i, j in enumerate(level):
            if j + 1 >= len(opts):
                continue
            trial = [opts[x] for x in level]
            trial[i] = opts[j + 1]
            if budget.total(trial) > budget.limit:
                continue
            added = budget.cost(i, opts[j + 1]) - budget.cost(i, opts[j])
            gain = (table[i, j] - table[i, j + 1]) / max(added, 1e-12)
            if gain > best:
                best, pick = gain, i
        if pick < 0:
            return [opts[j] for j in level]
        level[pick] += 1


def hutchinson_traces(model: nn.Module, names: list[str], batches: list, samples: int,
                      seed: int = 0) -> list[float]:
    """Mean Hessian diagonal (trace / weights) of the cross-entropy per layer, by Hutchinson's
    estimator with Rademacher vectors (Hessian-vector products by double backward, fp32)."""
    model = model.eval()
    modules = dict(model.named_modules())
    params = [modules[n].weight for n in names]
    g = torch.Generator().manual_seed(seed)
    sums = [0.0] * len(names)
    for _ in range(samples):
        vs = [torch.randint(0, 2, p.shape, generator=g).float() * 2 - 1 for p in params]
        for x, y in batches:
            loss = F.cross_entropy(model(x.float()), y) * len(y)
            grads = torch.autograd.grad(loss, params, create_graph=True)
            hv = torch.autograd.grad(grads, params, grad_outputs=vs)
            for i, (h, v) in enumerate(zip(hv, vs, strict=True)):
                sums[i] += float((h * v).sum())
    n = sum(len(y) for _, y in batches)
    return [s / (samples * n * p.numel()) for s, p in zip(sums, params, strict=True)]


def knapsack(costs: np.ndarray, values: np.ndarray, capacity: float) -> list[int]:
    """Exact multiple-choice knapsack: one option per row, total integer cost <= ``capacity``,
    least total value. Returns the chosen option index per row."""
    cap = int(math.floor(capacity))
    costs = np.asarray(costs, dtype=np.int64)
    if cap < 0 or costs.min(axis=1).sum() > cap:
        raise ValueError("no choice of options fits the capacity")
    best = np.full(cap + 1, np.inf)
    best[0] = 0.0
    choices = np.zeros((len(costs), cap + 1), dtype=np.int16)
    for i in range(len(costs)):
        new = np.full(cap + 1, np.inf)
        for j, c in enumerate(costs[i]):
            if c > cap:
                continue
            cand = np.full(cap + 1, np.inf)
            cand[c:] = best[: cap + 1 - c] + values[i, j]
            better = cand < new
            new[better] = cand[better]
            choices[i, better] = j
        best = new
    end = int(np.argmin(best))
    picks = []
    for i in range(len(costs) - 1, -1, -1):
        j = int(choices[i, end])
        picks.append(j)
        end -= int(costs[i, j])
    return picks[::-1]


@register_allocator("hessian")
def hessian(ctx: AllocContext) -> Allocation:
    """HAWQ-style: mean Hessian trace x squared clustering error, least total within budget."""
    opts, budget = ctx.options(), ctx.budget
    batches = calibration_batches(ctx.data, ctx.hessian_images, seed=ctx.seed, batch_size=128)
    model = _float_copy(ctx.model)
    traces = hutchinson_traces(model, ctx.names, batches, ctx.hutchinson_samples, ctx.seed)
    if ctx.space is not None:
        return _hessian_joint(ctx, opts, traces)
    modules = dict(ctx.model.named_modules())
    omega = np.zeros((len(ctx.names), len(opts)))
    costs = np.zeros((len(ctx.names), len(opts)))
    for i, name in enumerate(ctx.names):
        w = modules[name].weight.detach().float()
        for j, k in enumerate(opts):
            err = float(((ctx.evaluator.clustered_weight(name, k).float() - w) ** 2).sum())
            omega[i, j] = max(traces[i], 0.0) * err
            costs[i, j] = budget.cost(i, k)
    picks = knapsack(costs, omega, budget.limit - budget.fixed)
    return [opts[j] for j in picks]


def _float_copy(model: nn.Module) -> nn.Module:
    import copy

    net = copy.deepcopy(model).float().eval()
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _greedy_joint(ctx: AllocContext, opts: list[int]) -> tuple[list[float], list[int]]:
    space, ev = ctx.space, ctx.evaluator
    assert space is not None and isinstance(ev, JointEvaluator)
    floats = {n: 0 for n in ctx.names}
    rate_table = {i: np.array([ev.joint_scores(floats, {ctx.names[i]: r})["kl"] if r else 0.0
                               for r in space.rates]) for i in space.prunable}

    def total(rates: list[float], ks: list[int]) -> float:
        return space.budget_for(rates).total(ks)

    return joint_greedy(sensitivity_table(ctx), rate_table, space.rates, opts, total,
                        ctx.budget.limit)


def _hessian_joint(ctx: AllocContext, opts: list[int],
                   traces: list[float]) -> tuple[list[float], list[int]]:
    space, ev = ctx.space, ctx.evaluator
    assert space is not None and isinstance(ev, JointEvaluator)
    budget = ctx.budget

    @functools.cache
    def cost(i: int, k: int, r_out: float, r_in: float) -> float:
        return space.layer_cost(i, k, r_out, r_in)

    @functools.cache
    def value(i: int, k: int, r_out: float, r_in: float) -> float:
        err = ((ev.joint_weight(i, k, r_out, r_in).float() - space.weights[i].float()) ** 2).sum()
        return max(traces[i], 0.0) * float(err)

    # the space's fixed part: where it credits pruned channels' floats, they are in the costs
    return joint_knapsack(len(ctx.names), space.producer_of, space.prunable, space.rates, opts,
                          cost, value, budget.limit - space.budget.fixed)
