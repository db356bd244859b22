"""Joint search: prunable chains, exact masked scoring, budgets over random episodes, end to end."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import planted_data
from rlcompress.clustering import ShareConfig, clusterable_layers
from rlcompress.models import build_model, resnet_spec
from rlcompress.models.zoo import randomise_batchnorm
from rlcompress.pruning import FilterMasks, PruneConfig, layer_shapes, shrink_resnet
from rlcompress.search import BudgetError, DDPGConfig, SearchConfig, run_search
from rlcompress.search.env import layer_features
from rlcompress.search.evaluator import PolicyEvaluator
from rlcompress.search.joint import (
    JointEnv,
    JointEvaluator,
    JointSpace,
    joint_demos,
    parse_rates,
    prunable_chains,
)
from rlcompress.search.runner import make_budget

RATES = parse_rates("0.25,0.5")


def _tiny() -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    spec = resnet_spec(8, num_classes=4, widths=(8, 16, 32))
    model = build_model(spec).eval()
    with torch.no_grad():  # trained-looking batch norms: masked and removed channels must agree
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model, spec


class _Vgg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.c3 = nn.Conv2d(8, 4, 1)
        self.sig = nn.Conv2d(4, 4, 1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.sigmoid(self.c3(self.dw(x)))  # sigmoid(0) != 0: c3 -> sig is no chain
        return self.fc(self.sig(x).mean((2, 3)))


def test_chains_are_the_exactly_removable_links():
    model, _ = _tiny()
    chains = prunable_chains(model)
    # one chain per residual block (its inner channels); block outputs meet a residual add
    assert [c.producer for c in chains] == ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"]
    assert all(c.consumer == c.producer.replace("conv1", "conv2") for c in chains)
    assert all(c.bn == c.producer.replace("conv", "bn") for c in chains)
    vgg = prunable_chains(_Vgg())
    # c2 feeds a depthwise conv (grouped: not a plain consumer); c3 -> sigmoid is not zero-preserving
    assert [(c.producer, c.consumer) for c in vgg] == [("c1", "c2")]


@pytest.mark.parametrize("dims", [1, 3])
def test_conv1d_and_conv3d_links_are_chains_too(dims: int):
    from test_user_models import SignalNet

    chains = prunable_chains(SignalNet(dims))
    assert [(c.producer, c.bn, c.consumer) for c in chains] == [("c1", "b1", "c2")]


class _MlpHead(nn.Module):
    """Biased convs without batch norm, and a classifier with two hidden linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc1, self.drop = nn.Linear(8 * 4 * 4, 16), nn.Dropout(0.2)
        self.fc2, self.fc3 = nn.Linear(16, 12), nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 4), 1)
        return self.fc3(torch.relu(self.fc2(self.drop(nn.functional.gelu(self.fc1(x))))))


def test_linear_hidden_widths_and_biased_convs_are_chains():
    chains = prunable_chains(_MlpHead())
    # c2 -> fc1 crosses a flatten (a conv's channels are not a linear's features): no chain
    assert [(c.producer, c.bn, c.consumer) for c in chains] == [
        ("c1", None, "c2"), ("fc1", None, "fc2"), ("fc2", None, "fc3")]


class _NormHead(nn.Module):
    """A batch norm without scale and shift, and a head of linear, BatchNorm1d, ReLU, dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8, affine=False)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16),
                                  nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = torch.relu(self.c2(torch.relu(self.b1(self.c1(x)))))
        return self.head(nn.functional.adaptive_avg_pool2d(x, 4))


@pytest.mark.parametrize("net, rates, pruned", [
    (_MlpHead, {"c1": 0.5, "fc1": 0.25, "fc2": 0.5}, {"c1": 4, "fc1": 4, "fc2": 6}),
    # b1 has no scale and shift to zero: c1 is no chain (the group pruner keeps it whole too)
    (_NormHead, {"head.1": 0.25}, {"head.1": 4}),
])
def test_masked_scoring_of_biased_and_linear_chains_equals_the_pruned_model(net: type, rates: dict,
                                                                            pruned: dict):
    from rlcompress.pruning.groups import GroupPruneConfig, prune_groups

    torch.manual_seed(0)
    model = net()
    randomise_batchnorm(model)
    model.eval()
    with torch.no_grad():  # biases large enough that a leaked one would change the output
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-1.0, 1.0)
    data = planted_data(n_train=32, n_val=48, size=16)
    names = list(clusterable_layers(model))
    spec = {"arch": "user", "shapes": layer_shapes(model)}
    budget = make_budget(model, spec, names, SearchConfig(target_size="1000000"), ShareConfig())
    space = JointSpace(model, names, budget, RATES)
    assert {names[i] for i in space.prunable} == set(rates)
    cfg = ShareConfig(method="exact", bn_images=0)
    joint = JointEvaluator(space, model, names, data, 48, cfg, precision="fp32")
    small, report = prune_groups(model, torch.zeros(1, 3, 16, 16), GroupPruneConfig(rate=0.0),
                                 rates=rates)
    assert {g.name: g.pruned for g in report.groups if g.pruned} == pruned
    plain = PolicyEvaluator(small, names, data, 48, cfg, precision="fp32")
    x = _scores_and_outputs_agree(joint, plain, {n: 4 for n in names}, rates)
    with torch.no_grad():
        joint.rates = {}  # the unpruned float policy gives the dense model back
        joint.load_policy({n: 0 for n in names})
        torch.testing.assert_close(joint.model(x), model(x), rtol=0, atol=0)


def _scores_and_outputs_agree(joint: JointEvaluator, plain: PolicyEvaluator, ks: dict[str, int],
                              rates: dict[str, float]) -> torch.Tensor:
    """The masked dense model and the physically pruned one score and compute alike; returns
    the input batch compared."""
    assert joint.joint_scores(ks, rates, kl=False) == plain.scores(ks, kl=False)
    joint.rates = rates
    with torch.no_grad():
        joint.load_policy(ks)
        plain.load_policy(ks)
        x = joint.inputs[0][0]
        torch.testing.assert_close(joint.model(x), plain.model(x), rtol=1e-4, atol=1e-4)
    return x


def _space(model: nn.Module, spec: dict, limit: float) -> JointSpace:
    names = list(clusterable_layers(model))
    budget = make_budget(model, spec, names, SearchConfig(target_size=str(int(limit))), ShareConfig())
    return JointSpace(model, names, budget, RATES, credit_floats=True)  # SearchConfig's default


def test_masked_scoring_equals_the_physically_pruned_model():
    """With unweighted clustering, a joint policy scored on the dense model with masks gives the
    accuracy and outputs of the model physically pruned at those rates and clustered."""
    model, spec = _tiny()
    data = planted_data(n_train=32, n_val=48, size=16)
    space = _space(model, spec, 10**7)
    names = space.names
    cfg = ShareConfig(method="exact", bn_images=0)
    rates = {names[i]: r for i, r in zip(space.prunable, (0.25, 0.5, 0.25), strict=True)}
    ks = {n: 4 for n in names}
    joint = JointEvaluator(space, model, names, data, 48, cfg, precision="fp32")
    masks = FilterMasks.compute(model, PruneConfig(rate=0.0, rates=rates))
    pruned = copy.deepcopy(model)
    masks.apply(pruned)
    small, _ = shrink_resnet(pruned, spec, masks)
    plain = PolicyEvaluator(small, names, data, 48, cfg, precision="fp32")
    _scores_and_outputs_agree(joint, plain, ks, rates)


def test_repeated_policies_are_answered_from_memory_with_the_same_scores():
    model, spec = _tiny()
    data = planted_data(n_train=32, n_val=48, size=16)
    space = _space(model, spec, 10**7)
    names = space.names
    cfg = ShareConfig(method="exact", bn_images=16)
    joint = JointEvaluator(space, model, names, data, 48, cfg, precision="fp32")
    fresh = JointEvaluator(space, model, names, data, 48, cfg, precision="fp32")
    a, b = {n: 4 for n in names}, {n: 2 for n in names}
    rates = {names[space.prunable[0]]: 0.5}
    first = [joint.joint_scores(a, {}), joint.joint_scores(b, rates), joint.joint_scores(a, rates)]
    again = [joint.joint_scores(a, {}), joint.joint_scores(b, rates), joint.joint_scores(a, rates)]
    assert again == first and joint.calls == 3 and joint.repeats == 3
    # a policy seen before changes nothing the next new policy is scored with
    assert fresh.joint_scores(b, {}) == joint.joint_scores(b, {})
    assert len({f["kl"] for f in first}) == 3
    # top-1 alone is answered from a policy scored with KL; KL is scored when not yet known
    assert joint.joint_scores(a, {}, kl=False) == {"top1": first[0]["top1"]} and joint.calls == 4
    c = {n: 8 for n in names}
    plain_c = joint.joint_scores(c, {}, kl=False)
    assert joint.joint_scores(c, {})["top1"] == plain_c["top1"] and joint.calls == 6


@pytest.mark.parametrize("frac", [0.02, 0.4, 1.0])
def test_budget_holds_over_random_episodes(frac):
    """From barely feasible (every chain at the largest rate, k_min) to dense k8."""
    model, spec = _tiny()
    loose = _space(model, spec, 10**7)
    lo = loose.budget_for(loose.max_rates()).min_total()
    limit = lo + frac * (loose.budget.total([8] * len(loose.names)) - lo)
    space = _space(model, spec, limit)
    seen = []
    env = JointEnv(np.zeros((len(space.names), 8), np.float32), space.names, space,
                   lambda ks, rates: seen.append((ks, rates)) or 50.0)
    rng = np.random.default_rng(0)
    for _ in range(40):
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(np.array([rng.random()], np.float32))
        rates = [info["rates"].get(n, 0.0) for n in space.names]
        assert set(info["rates"]) == {space.names[i] for i in space.prunable}
        assert all(r in RATES for r in rates)
        ks = [info["policy"][n] for n in space.names]
        assert all(space.budget.k_min <= k <= space.budget.k_max for k in ks)
        assert all(k & (k - 1) == 0 for k in ks), "a file budget charges whole bits: k = 2^b"
        assert info["cost"] <= space.budget.limit
        assert space.budget_for(rates).total(ks) == info["cost"]
        # the stored transitions replay exactly the evaluated policy
        replay = env.demo_actions((rates, ks))
        env.reset()
        for a in replay:
            _, _, done, _, again = env.step(np.array([a], np.float32))
        assert again["policy"] == info["policy"] and again["rates"] == info["rates"]
    assert len(seen) == 80


def test_impossible_budget_is_an_error_before_any_work():
    model, spec = _tiny()
    with pytest.raises(BudgetError, match="cannot be met"):
        _space(model, spec, 500)


def test_demos_fit_and_include_every_uniform_rate():
    model, spec = _tiny()
    loose = _space(model, spec, 10**7)
    lo = loose.budget_for(loose.max_rates()).min_total()
    space = _space(model, spec, lo + 0.5 * (loose.budget.total([16] * len(loose.names)) - lo))
    demos = joint_demos(space, clusterable_layers(model))
    assert {r for rates, _ in demos for r in rates} >= set(RATES)
    for rates, ks in demos:
        assert space.budget_for(rates).total(ks) <= space.budget.limit


def test_joint_search_end_to_end_is_deterministic(tmp_path: Path):
    data = planted_data(n_train=64, n_val=64, size=16)
    cfg = SearchConfig(episodes=5, target_size="6KB", prune_rates="0.25,0.5", val_images=64,
                       progress=False, k_max=64, threads=1, rescore=2)
    rows = []
    for name in ("a", "b"):
        model, spec = _tiny()
        summary = run_search(model, spec, data, tmp_path / name, cfg, None,
                             DDPGConfig(warmup=2, hidden=32, batch_size=8))
        with open(tmp_path / name / "episodes.csv") as f:
            rows.append([{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)])
    assert rows[0] == rows[1] and len(rows[0]) == 5
    best = summary["best"]
    assert set(best["rate"]) == {"layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1"}
    assert best["cost"] <= 6000 and all(r in RATES for r in best["rate"].values())
    assert any(float(x) > 0 for r in rows[0] for x in r["rates"].split(";"))


@pytest.mark.parametrize("name", ["uniform", "greedy", "hessian"])
def test_allocators_in_the_joint_space_fit_and_resume(tmp_path: Path, name: str):
    import json

    data = planted_data(n_train=64, n_val=64, size=16)
    cfg = SearchConfig(strategy=name, target_size="5KB", prune_rates="0.25,0.5", val_images=64,
                       progress=False, k_max=64, threads=1, rescore=0)
    model, spec = _tiny()
    summary = run_search(model, spec, data, tmp_path / "a", cfg)
    best, alloc = summary["best"], json.loads((tmp_path / "a" / "allocation.json").read_text())
    assert summary["episodes"] == 1 and best["cost"] <= 5000
    assert best["k"] == alloc["k"] and best["rate"] == alloc["rate"]  # played as allocated
    assert all(r in RATES for r in best["rate"].values())
    space = _space(model, spec, 5000)
    rates = [best["rate"].get(n, 0.0) for n in space.names]
    assert space.budget_for(rates).total([best["k"][n] for n in space.names]) <= 5000
    if name == "uniform":
        assert len(set(best["k"].values())) == 1
    model, spec = _tiny()  # resuming reads the allocation back
    assert run_search(model, spec, data, tmp_path / "a", cfg, resume=True)["best"] == best


def test_joint_knapsack_is_optimal_on_a_planted_problem():
    import itertools

    from rlcompress.search.joint_alloc import joint_knapsack

    rng = np.random.default_rng(0)
    producer_of, prunable = {1: 0, 3: 2}, {0, 2}  # chains 0 -> 1 and 2 -> 3, layer 4 alone
    rates, ks = (0.0, 0.5), [2, 4, 8]
    for _ in range(10):
        base = rng.integers(5, 40, 5)
        noise = rng.random((5, 3, 2, 2))

        def cost(i, k, ro, ri, base=base):
            return int(base[i] * math.log2(k) * (1 - ro) * (1 - ri)) + 1

        def value(i, k, ro, ri, noise=noise):
            return noise[i, ks.index(k), rates.index(ro), rates.index(ri)]

        def brute_best(cap):
            best = None
            for r0, r2 in itertools.product(rates, repeat=2):
                rs = [r0, 0.0, r2, 0.0, 0.0]
                for kk in itertools.product(ks, repeat=5):
                    ri = [0.0, r0, 0.0, r2, 0.0]
                    c = sum(cost(i, kk[i], rs[i], ri[i]) for i in range(5))
                    v = sum(value(i, kk[i], rs[i], ri[i]) for i in range(5))
                    if c <= cap and (best is None or v < best):
                        best = v
            return best

        cap = int(rng.integers(15, 120))
        want = brute_best(cap)
        if want is None:
            with pytest.raises(ValueError):
                joint_knapsack(5, producer_of, prunable, rates, ks, cost, value, cap)
            continue
        rs, kk = joint_knapsack(5, producer_of, prunable, rates, ks, cost, value, cap)
        ri = [0.0, rs[0], 0.0, rs[2], 0.0]
        assert rs[1] == rs[3] == rs[4] == 0.0
        assert sum(cost(i, kk[i], rs[i], ri[i]) for i in range(5)) <= cap
        assert sum(value(i, kk[i], rs[i], ri[i]) for i in range(5)) == pytest.approx(want)


def test_joint_greedy_never_exceeds_the_budget():
    from rlcompress.search.joint_alloc import joint_greedy

    rng = np.random.default_rng(1)
    rates, ks = (0.0, 0.25, 0.5), [2, 4, 8, 16]
    sizes = rng.integers(100, 1000, 6)

    def total(rs, kk):
        r_in = [0.0, rs[0], 0.0, rs[2], 0.0, 0.0]
        return sum(s * math.log2(k) * (1 - r) * (1 - q) for s, k, r, q in zip(sizes, kk, rs, r_in, strict=True))

    smallest = total([0.5, 0, 0.5, 0, 0, 0], [2] * 6)
    for limit in np.linspace(smallest, total([0.0] * 6, [16] * 6), 12):
        table = np.sort(rng.random((6, 4)), axis=1)[:, ::-1]
        rtab = {0: np.sort(rng.random(3)), 2: np.sort(rng.random(3))}
        rs, kk = joint_greedy(table, rtab, rates, ks, total, limit)
        assert total(rs, kk) <= limit + 1e-9
        assert rs[1] == rs[3] == rs[4] == rs[5] == 0.0


def test_features_shape_matches_the_joint_observation():
    model, spec = _tiny()
    space = _space(model, spec, 10**7)
    feats = layer_features(model, space.names, space.budget.kept, (1, 3, 16, 16))
    env = JointEnv(feats, space.names, space, lambda ks, rates: 1.0)
    obs, _ = env.reset()
    assert env.observation_space.contains(obs)


def test_file_ratio_budget_is_the_dense_float_file_over_the_ratio():
    from rlcompress.codec.sizes import reference_sizes
    from rlcompress.search.budget import file_ratio_of

    model, spec = _tiny()
    names = list(clusterable_layers(model))
    b = make_budget(model, spec, names, SearchConfig(target_size="4x"), ShareConfig())
    assert b.limit == int(reference_sizes(spec, model)["state_bytes"] / 4)
    assert file_ratio_of("16x") == 16.0 and file_ratio_of("16KB") is None
    with pytest.raises(ValueError, match="above 1x"):
        file_ratio_of("0.5x")


def test_an_unknown_strategy_is_refused_before_any_work():
    with pytest.raises(ValueError, match="unknown search strategy 'hawq'.*hessian"):
        SearchConfig(strategy="hawq", target_size="10KB")


def test_allocator_demos_lead_the_joint_warm_up(tmp_path: Path):
    import json

    data = planted_data(n_train=64, n_val=64, size=16)
    cfg = SearchConfig(episodes=3, target_size="5KB", prune_rates="0.25,0.5", val_images=64,
                       progress=False, k_max=64, threads=1, rescore=0,
                       allocator_demos="hessian,uniform")
    model, spec = _tiny()
    run_search(model, spec, data, tmp_path / "s", cfg, None, DDPGConfig(warmup=3, hidden=32,
                                                                        batch_size=8))
    with open(tmp_path / "s" / "episodes.csv") as f:
        rows = list(csv.DictReader(f))
    space = _space(model, spec, 5000)
    for row, name in zip(rows, ("hessian", "uniform"), strict=False):
        alloc = json.loads((tmp_path / "s" / f"allocation-{name}.json").read_text())
        assert [int(k) for k in row["ks"].split(";")] == alloc["ks"]  # played first, as allocated
        assert [float(r) for r in row["rates"].split(";")] == [alloc["rates"][i]
                                                               for i in space.prunable]
    with pytest.raises(ValueError, match="unknown allocator demos"):
        SearchConfig(allocator_demos="hawq")


def test_joint_compress_keeps_protected_layers_whole(tmp_path: Path):
    import rlcompress

    torch.manual_seed(0)

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU()]

    model = nn.Sequential(*block(3, 8), *block(8, 8), *block(8, 8), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 4)).eval()
    data = planted_data(n_train=64, n_val=32, size=16)
    _, report = rlcompress.compress(model, data=data, target_size="3KB", prune_rates="0.5",
                                    protect=("6",), prune_epochs=0, episodes=2, share_epochs=0,
                                    val_images=32, progress=False, precision="fp32",
                                    out=tmp_path / "c")
    assert set(report["rates"]) == {"0"}  # the chain 3 -> 6 ends in a protected layer
    decoded = rlcompress.load(report["file"], model=copy.deepcopy(model))
    assert decoded[3].out_channels == 8 and decoded[6].in_channels == decoded[6].out_channels == 8
    assert report["file_bytes"] <= 3000


def test_hill_climb_finds_the_planted_optimum_within_the_budget():
    from rlcompress.search.refine import hill_climb

    target = (16, 4, 8)  # accuracy peaks here; costs 4 + 2 + 3 = 9 bits per weight
    limit = 9.0

    def cost(p: tuple) -> float:
        return float(sum(math.log2(k) for k in p[1]) + 3 * sum(p[0]))

    def evaluate(p: tuple) -> float:
        return 90.0 - sum((math.log2(k) - math.log2(t)) ** 2 for k, t in zip(p[1], target, strict=True)) - 10 * sum(p[0])

    start = ((0.0, 0.0, 0.0), (4, 8, 8))  # within budget, 2 bits away
    runs = [hill_climb(start, evaluate(start), evaluate, cost, limit, 200, seed=1, k_min=2,
                       k_max=64, rate_steps=[0.0, 0.5], prunable=[0]) for _ in range(2)]
    assert runs[0] == runs[1]  # seeded: deterministic
    steps = runs[0]
    assert all(s.cost <= limit for s in steps)
    accepted = [s.accuracy for s in steps if s.accepted]
    assert accepted == sorted(accepted) and accepted[-1] == 90.0
    assert [s for s in steps if s.accepted][-1].ks == list(target)
    # a spent evaluation budget stops the walk
    assert len(hill_climb(start, evaluate(start), evaluate, cost, limit, 3, seed=1, k_min=2,
                          k_max=64)) == 3


@pytest.mark.parametrize("rescore", [0, 2])
def test_refinement_adds_rows_within_budget_and_never_lowers_the_best(tmp_path: Path, rescore: int):
    data = planted_data(n_train=64, n_val=80, size=16)
    base = {"episodes": 4, "target_size": "6KB", "prune_rates": "0.25,0.5", "val_images": 40,
            "progress": False, "k_max": 64, "threads": 1, "rescore": rescore}
    best = {}
    for refine in (0, 6):
        model, spec = _tiny()
        summary = run_search(model, spec, data, tmp_path / f"r{refine}",
                             SearchConfig(**base, refine=refine), None,
                             DDPGConfig(warmup=2, hidden=32, batch_size=8))
        with open(tmp_path / f"r{refine}" / "episodes.csv") as f:
            rows = list(csv.DictReader(f))
        best[refine] = max(float(r["val_top1"]) for r in rows)
        assert all(float(r["cost"]) <= 6000 for r in rows)
    assert 4 < len(rows) <= 10 and rows[-1]["sigma"] == "refine"
    assert [int(r["episode"]) for r in rows] == list(range(1, len(rows) + 1))
    if rescore:  # the walk scored on all 80 validation images; its best was a candidate
        walk_best = max(float(r["val_top1"]) for r in rows[4:])
        assert summary["best"]["val_top1_rescored"] >= walk_best
        # the search's own candidates were re-scored, not the walk's rows (other images)
        assert sum(r["episode"] <= 4 for r in summary["rescored"]) == rescore
    else:
        assert best[6] >= best[0]


def test_walk_starts_from_the_best_rescored_policy():
    from rlcompress.search.runner import _walk_start

    rows = [{"episode": str(i), "val_top1": str(v), "cost": "10"} for i, v in
            enumerate([70.0, 75.0, 72.0], start=1)]
    assert _walk_start(rows, [])["episode"] == "2"  # no re-scoring: the subset's best
    rescored = [{"episode": 2, "val_top1_rescored": 71.0, "cost": 10.0},
                {"episode": 3, "val_top1_rescored": 73.5, "cost": 10.0}]
    assert _walk_start(rows, rescored)["episode"] == "3"


@pytest.mark.parametrize("compact_bn", [False, True])
@pytest.mark.parametrize("net", ["resnet", _MlpHead])
def test_budget_credits_pruned_channels_floats_and_stays_an_upper_bound(tmp_path: Path, net,
                                                                        compact_bn: bool):
    """Charged for its kept channels' floats only, a joint policy's estimate is still at least
    its real file, and lower than the dense-floats estimate by exactly the floats removed."""
    from rlcompress.clustering.sharing import share_model
    from rlcompress.codec import save_compressed
    from rlcompress.pruning.groups import GroupPruneConfig, prune_groups

    model = _tiny()[0] if net == "resnet" else net().eval()
    names = list(clusterable_layers(model))
    spec = {"arch": "user", "shapes": layer_shapes(model)}
    cfg = SearchConfig(target_size="1000000", compact_bn=compact_bn)
    budget = make_budget(model, spec, names, cfg, ShareConfig())
    credited = JointSpace(model, names, budget, RATES, credit_floats=True, compact_bn=compact_bn)
    dense = JointSpace(model, names, budget, RATES)
    assert credited.channel_bytes and not dense.channel_bytes
    rng = np.random.default_rng(0)
    freed_any = 0.0
    for trial in range(3):
        rates = [float(rng.choice(RATES if trial == 0 else (0.0, *RATES)))
                 if i in credited.chain_at else 0.0 for i in range(len(names))]
        ks = [int(rng.choice((2, 4, 16))) for _ in names]
        rate_map = {names[i]: rates[i] for i in credited.prunable if rates[i] > 0}
        small = copy.deepcopy(model)
        if rate_map:
            small, _ = prune_groups(small, torch.zeros(1, 3, 16, 16), GroupPruneConfig(rate=0.0),
                                    rates=rate_map)
        share_model(small, dict(zip(names, ks, strict=True)))
        path = tmp_path / f"{trial}.rlc"
        save_compressed(small, {"arch": "user", "shapes": layer_shapes(small)}, path,
                        compact_bn=compact_bn)
        real = path.stat().st_size
        estimate = credited.budget_for(rates).total(ks)
        assert real <= estimate <= dense.budget_for(rates).total(ks)
        freed = sum(credited.channel_bytes[i] * (credited.weights[i].shape[0]
                                                 - credited.kept_channels(i, rates[i]))
                    for i in credited.chain_at)
        assert dense.budget_for(rates).total(ks) - estimate == pytest.approx(freed)
        freed_any += freed
        # the per-layer costs the knapsack adds up give the same total
        layer_sum = sum(credited.layer_cost(i, k, rates[i], credited.in_rate(i, rates))
                        for i, k in enumerate(ks))
        assert credited.budget.fixed + layer_sum == pytest.approx(estimate)
    assert freed_any > 0
    unpruned = [0.0] * len(names)  # at rate 0 the two accountings agree
    assert credited.budget_for(unpruned).total([2] * len(names)) == pytest.approx(
        dense.budget_for(unpruned).total([2] * len(names)))


def test_a_search_recorded_before_the_float_credit_resumes_without_it():
    from dataclasses import asdict

    from rlcompress.jobs.search import saved_search_config

    old = asdict(SearchConfig(prune_rates="0,0.5", target_size="5KB"))
    del old["pruned_float_credit"]  # what a config.json written before session 25 holds
    assert saved_search_config(old).pruned_float_credit is False
    new = asdict(SearchConfig(prune_rates="0,0.5", target_size="5KB"))
    assert saved_search_config(new, progress=False) == SearchConfig(
        prune_rates="0,0.5", target_size="5KB", progress=False)
    assert SearchConfig().pruned_float_credit  # new searches credit pruned channels' floats
