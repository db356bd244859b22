"""One-shot allocators: exact knapsack, Hutchinson traces, and each allocator through the search."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SMALL_ARGS, SMALL_SIZE, load_benchmark, planted_data
from rlcompress.clustering import clusterable_layers
from rlcompress.models import build_model, resnet_spec
from rlcompress.search import SearchConfig, run_search
from rlcompress.search.allocators import ALLOCATORS, hutchinson_traces, knapsack

CFG = dict(target_ratio=6.0, val_images=64, progress=False, k_max=64, threads=1, rescore=0)


def _tiny():
    torch.manual_seed(0)
    spec = resnet_spec(8, num_classes=4, widths=(8, 16, 32))
    return build_model(spec).eval(), spec


def test_knapsack_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows, opts = 4, 3
        costs = np.sort(rng.integers(1, 30, (rows, opts)), axis=1)
        values = rng.random((rows, opts))
        cap = int(rng.integers(costs[:, 0].sum(), costs[:, -1].sum() + 1))
        best = min((sum(values[i, j] for i, j in enumerate(p)), p)
                   for p in itertools.product(range(opts), repeat=rows)
                   if sum(costs[i, j] for i, j in enumerate(p)) <= cap)
        got = knapsack(costs, values, cap)
        assert sum(costs[i, j] for i, j in enumerate(got)) <= cap
        assert sum(values[i, j] for i, j in enumerate(got)) == pytest.approx(best[0])
    with pytest.raises(ValueError):
        knapsack(np.array([[5, 6]]), np.array([[1.0, 0.0]]), 4)


def test_hutchinson_matches_the_exact_hessian_diagonal():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    names = ["0", "2"]
    est = hutchinson_traces(model, names, [(x, y)], samples=400)
    params = [model[0].weight, model[2].weight]

    def loss_of(w0, w2):
        h = torch.tanh(x @ w0.T + model[0].bias)
        return torch.nn.functional.cross_entropy(h @ w2.T + model[2].bias, y) * len(y)

    hess = torch.autograd.functional.hessian(loss_of, tuple(p.detach() for p in params))
    for i, p in enumerate(params):
        exact = hess[i][i].reshape(p.numel(), p.numel()).diagonal().sum() / (len(y) * p.numel())
        assert est[i] == pytest.approx(float(exact), rel=0.25, abs=1e-4)


@pytest.mark.parametrize("name", ["uniform", "greedy", "hessian"])
def test_allocators_fit_the_budget_and_are_deterministic(tmp_path: Path, name: str):
    data = planted_data(n_train=64, n_val=64, size=16)
    results = []
    for run in ("a", "b"):
        model, spec = _tiny()
        results.append(run_search(model, spec, data, tmp_path / run,
                                  SearchConfig(strategy=name, **CFG)))
    a, b = results
    assert a["episodes"] == 1 and a["best"]["k"] == b["best"]["k"]
    assert a["best"]["paper_ratio"] >= 6.0
    allocation = json.loads((tmp_path / "a" / "allocation.json").read_text())
    assert allocation["k"] == a["best"]["k"]
    if name == "uniform":
        assert len(set(allocation["ks"])) == 1
    # resuming a finished allocation reads it back instead of recomputing
    model, spec = _tiny()
    again = run_search(model, spec, data, tmp_path / "a", SearchConfig(strategy=name, **CFG),
                       resume=True)
    assert again["best"]["k"] == a["best"]["k"]


def test_every_allocator_is_a_search_strategy():
    from rlcompress.search import STRATEGIES

    assert set(ALLOCATORS) <= set(STRATEGIES)


def test_reward_study_runs_tiny_and_resumes(image_tar: Path, tmp_path: Path):
    from rlcompress.models import model_spec, save_checkpoint

    mod = load_benchmark("reward_study")
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "m")
    args = ["--model", str(tmp_path / "m.safetensors"), "--target-ratio", "8", "--policies", "4",
            "--epochs", "1", "--val-images", "3", "--k-max", "16", "--source", str(image_tar),
            "--data-dir",
            str(tmp_path / "d"), "--val-size", "3", "--threads", "1", "--runs",
            str(tmp_path / "runs"), "--out", str(tmp_path / "study.json"), "--ft-steps", "2"]
    summary = mod.main(args)
    assert summary["policies"] == 4 and set(summary["spearman"]) == set(mod.SIGNALS)
    assert all(r["cost"] <= summary["budget"]["limit"] for r in summary["rows"])
    assert len({json.dumps(r["k"], sort_keys=True) for r in summary["rows"]}) == 4
    again = mod.main(args)  # every policy done: nothing is fine-tuned again
    assert again["rows"] == summary["rows"]


def test_frontier_cli_tiny_writes_points_and_resumes(small_tar: Path, tmp_path: Path, capsys):
    from rlcompress.cli import main
    from rlcompress.models import model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "m")
    args = ["frontier", "--model", str(tmp_path / "m.safetensors"), "--out", str(tmp_path / "run"),
            "--results", str(tmp_path / "res"), "--ratios", "10", "--strategies",
            "uniform", "random", "--seeds", "2", "--episodes", "2", "--share-epochs", "0",
            "--val-images", "3", "--threads", "1", "--source", str(small_tar), "--data-dir",
            str(tmp_path / "d"), "--val-size", "3", "--quiet", *SMALL_ARGS]
    peer_file = tmp_path / "peer.rlc"
    peer_file.write_bytes(b"x" * 5000)
    (tmp_path / "peers.json").write_text(json.dumps([
        {"model": "resnet20", "tool": "coremltools", "method": "DKMPalettizer", "bits": 2,
         "epochs": 1, "lr": lr, "top1": top1, "val_top1": val, "file": str(peer_file),
         "file_bytes": 5000} for lr, top1, val in ((0.01, 50.0, 40.0), (0.001, 45.0, 42.0))]
        + [{"model": "resnet20", "tool": "rlcompress", "method": "default", "bits": 2,
            "epochs": 0, "top1": 1.0, "val_top1": 1.0, "file": "x", "file_bytes": 1}]))
    args += ["--rules", "k16", "--peers", str(tmp_path / "peers.json")]
    assert main([*args, "--collect-only"]) == 0  # nothing finished yet: nothing run
    partial = json.loads((tmp_path / "res" / "m.partial.json").read_text())
    assert partial["finished"] == "0 of 4 points" and len(partial["points"]) == 1  # the peer
    assert not (tmp_path / "run").exists() and not (tmp_path / "res" / "m.json").exists()
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err  # one progress line per point, also when quiet
    assert err.count("frontier m: point ") == 4 and "x k16 seed 0: " in err
    result = json.loads((tmp_path / "res" / "m.json").read_text())
    assert len(result["points"]) == 1 + 2 + 1 + 1  # uniform, random x 2 seeds, k16, one peer
    assert main([*args, "--collect-only"]) == 0  # all finished: the partial file has them all
    partial = json.loads((tmp_path / "res" / "m.partial.json").read_text())
    assert partial["finished"] == "4 of 4 points" and partial["points"] == result["points"]
    for p in result["points"]:
        assert Path(p["file"]).is_file() and p["file_bytes"] <= p["budget_bytes"]
    rows = {(r["method"], r["target_ratio"]): r for r in result["rows"]}
    assert rows[("random", 10.0)]["seeds"] == 2 and rows[("uniform", 10.0)]["seeds"] == 1
    rule = next(p for p in result["points"] if p["method"] == "k16")
    assert rule["budget_bytes"] == rule["file_bytes"]  # a rule is a point at its own size
    peer = next(p for p in result["points"] if p["method"].startswith("coremltools"))
    assert peer["method"] == "coremltools-DKMPalettizer-1ep" and peer["top1"] == 45.0  # best val
    assert (tmp_path / "res" / "m.md").is_file() and (tmp_path / "res" / "m.png").is_file()
    assert main(args) == 0  # every point done: read back, nothing recomputed
    assert json.loads((tmp_path / "res" / "m.json").read_text())["points"] == result["points"]
    capsys.readouterr()
    # a process running a share of the seeds writes no tables that would pass for the whole
    assert main([*args, "--strategies", "random", "--only-seeds", "1"]) == 0
    assert "writes no tables" in capsys.readouterr().err
    # so does one given fewer strategies (or ratios) than the frontier its records hold
    assert main([*args, "--strategies", "uniform"]) == 0
    err = capsys.readouterr().err
    assert "writes no tables" in err and "10x-random-s0, 10x-random-s1" in err
    assert json.loads((tmp_path / "res" / "m.json").read_text())["points"] == result["points"]
    shutil.rmtree(tmp_path / "run")  # a fresh clone: only the committed records are left
    assert main(args) == 0 and not (tmp_path / "run").exists()
    assert json.loads((tmp_path / "res" / "m.json").read_text())["points"] == result["points"]
    records = tmp_path / "res" / "points" / "m"
    assert (records / "10x-random-s1.search.json").is_file()
    searched = json.loads((records / "10x-random-s1.search.json").read_text())["value"]
    assert main([*args, "--share-lr", "0.02", "--ratios", "10", "--strategies", "random",
                 "--seeds", "2"]) == 0  # training changed: retrained, search reused
    assert not (tmp_path / "run" / "10x" / "random-s1" / "search").exists()
    assert (tmp_path / "run" / "10x" / "random-s1" / "share-dkm0.04-bn" / "summary.json").is_file()
    # without batch-norm re-estimation in DKM training: another mode, its own folder and record
    assert main([*args, "--share-lr", "0.02", "--ratios", "10", "--strategies", "random",
                 "--seeds", "2", "--no-share-dkm-bn"]) == 0
    assert (tmp_path / "run" / "10x" / "random-s1" / "share-dkm0.04" / "summary.json").is_file()
    assert (records / "10x-random-s1.dkm0.04.json").is_file()
    assert "share_dkm_bn" not in json.loads((records / "10x-random-s1.dkm0.04.json").read_text())[
        "key"]["train"]
    again = json.loads((tmp_path / "res" / "m.json").read_text())
    assert next(p for p in again["points"] if p["method"] == "random" and p["seed"] == 1)["k"] \
        == searched["best"]["k"]
    assert main([*args, "--ratios", "1.0"]) == 2  # not a compression: refused
    assert "ratios must be > 1" in capsys.readouterr().err
    # other weights under the same name (a retrained baseline): the run folder is refused, and
    # the committed records, keyed by the weights' digest, are not taken for its points
    torch.manual_seed(1)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "m")
    assert main(args) == 2
    assert "was built on another model" in capsys.readouterr().err


def test_greedy_fill_leaves_no_affordable_doubling():
    from rlcompress.search.allocators import _fill
    from rlcompress.search.budget import paper_budget

    budget = paper_budget([1000, 4000, 500], 5500, target_ratio=10.0, k_min=2, k_max=64)
    opts = [2, 4, 8, 16, 32, 64]
    table = np.array([[5.0, 3, 2, 1, 0.5, 0.2], [9.0, 4, 2, 1, 0.6, 0.3], [2.0, 1, 0.5, 0.3, 0.2, 0.1]])
    ks = _fill([0, 0, 0], opts, table, budget)
    assert budget.total(ks) <= budget.limit
    for i, k in enumerate(ks):
        if k < opts[-1]:
            trial = list(ks)
            trial[i] = 2 * k
            assert budget.total(trial) > budget.limit


def test_joint_frontier_tiny_prunes_each_point_and_files_decode_to_their_accuracy(
        small_tar: Path, tmp_path: Path):
    from rlcompress.cli import main
    from rlcompress.data import DataConfig, load_data
    from rlcompress.jobs.share import evaluate_file
    from rlcompress.models import model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    args = ["frontier", "--model", str(tmp_path / "dense.safetensors"), "--out",
            str(tmp_path / "run"), "--results", str(tmp_path / "res"), "--ratios", "24",
            "--strategies", "greedy", "hessian", "--prune-rates", "0.5", "--prune-epochs", "0",
            "--share-epochs", "0", "--val-images", "3", "--threads", "1", "--source",
            str(small_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3", "--quiet", *SMALL_ARGS]
    assert main(args) == 0
    result = json.loads((tmp_path / "res" / "dense.json").read_text())
    assert result["config"]["prune_rates"] == "0.5" and len(result["points"]) == 2
    data = load_data(DataConfig(source=str(small_tar), data_dir=str(tmp_path / "d"), val_size=3,
                                image_size=SMALL_SIZE),
                     progress=False)
    for p in result["points"]:
        assert p["file_bytes"] <= p["budget_bytes"] and set(p["rate"].values()) <= {0.0, 0.5}
        scores = evaluate_file(p["file"], data)
        assert round(scores["test"]["top1"], 2) == p["top1"]
        pruned = json.loads((tmp_path / "run" / "24x" / f"{p['method']}-s0" / "prune" / "summary.json").read_text())
        assert pruned["latency_ms"] is None  # a frontier point does not time forward passes
    # the reward benchmark re-scores the records, with and without a short training, and resumes
    bench = load_benchmark("frontier_reward")
    argv = ["--name", "dense", "--model", str(tmp_path / "dense.safetensors"), "--points",
            str(tmp_path / "res" / "points" / "dense"), "--val-images", "3",
            "--ft-steps", "2", "--mode", "dkm0.04-bn", "--source", str(small_tar), "--data-dir", str(tmp_path / "d"),
            "--val-size", "3", *SMALL_ARGS, "--threads", "1", "--out", str(tmp_path / "fr.json")]
    report = bench.main(argv)
    assert len(report["rows"]) == 2 and report["per_budget"][0]["spearman_ft2"] is None
    assert all(0 <= r["reward_ft"] <= 100 and 0 <= r["reward_top1"] <= 100 for r in report["rows"])
    assert (tmp_path / "fr.ft2.json").is_file()
    assert bench.main(argv)["rows"] == report["rows"]
    bench.main([*argv, "--ft-lr", "0.5"])  # other settings: the saved rows are not reused
    saved = json.loads((tmp_path / "fr.ft2.json").read_text())
    assert saved["settings"]["ft_lr"] == 0.5 and len(saved["rows"]) == 2
    # a point trained again with another seed, in its own run folder, resumed on a rerun
    noise = load_benchmark("training_noise")
    argv = ["--name", "dense", "--model", str(tmp_path / "dense.safetensors"), "--points",
            str(tmp_path / "res" / "points" / "dense"), "--repeat", "24x-greedy-s0", "--seeds",
            "3", "--work", str(tmp_path / "noise"), "--mode", "dkm0.04-bn", "--source", str(small_tar), "--data-dir",
            str(tmp_path / "d"), "--val-size", "3", *SMALL_ARGS, "--threads", "1", "--out",
            str(tmp_path / "noise.json")]
    report = noise.main(argv)
    (group,) = [g for g in report["groups"] if g["source"] == "retrained"]
    assert [r["run"] for r in group["runs"]] == ["24x-greedy-s0 (frontier)", "24x-greedy-s0/s3"]
    assert (tmp_path / "noise" / "24x-greedy-s0" / "s3" / "share" / "model.rlc").is_file()
    assert report["noise"]["val_top1"]["dof"] >= 1
    assert noise.main(argv)["retrained"] == report["retrained"]  # resumed, not retrained
    again = noise.main([*argv, "--reproduce", "24x-greedy-s0"])  # its own seed: the same numbers
    (same,) = again["reproduced"]
    assert same["exact"] and same["point"] == "24x-greedy-s0"
    assert again["noise"] == report["noise"]  # a reproduction is no repeat
    with pytest.raises(SystemExit):
        noise.main([*argv, "--seeds", "0"])  # the point's own seed is no repeat
    # a point trained again with more epochs of trained quantization, its own seed and policy
    long = load_benchmark("long_training")
    argv = ["--name", "dense", "--model", str(tmp_path / "dense.safetensors"), "--points",
            str(tmp_path / "res" / "points" / "dense"), "--train", "24x-greedy-s0",
            "--share-epochs", "1", "--baseline-top1", "50", "--work", str(tmp_path / "long"),
            "--mode", "dkm0.04-bn", "--source", str(small_tar), "--data-dir", str(tmp_path / "d"),
            "--val-size", "3", *SMALL_ARGS, "--threads", "1", "--out", str(tmp_path / "long.json")]
    report = long.main(argv)
    row = report["points"]["24x-greedy-s0/e1"]
    first = {p["method"]: p for p in result["points"]}["greedy"]
    assert row["short_top1"] == first["top1"] and row["share_epochs"] == 1
    assert row["loss"] == round(50 - row["top1"], 2)
    pruned = json.loads((tmp_path / "long" / "e1" / "24x-greedy-s0" / "prune" / "summary.json").read_text())
    assert row["pruned"]["val_top1"] == pruned["val_top1"] and row["pruned"]["top1"] == pruned["top1"]
    share = json.loads((tmp_path / "long" / "e1" / "24x-greedy-s0" / "share" / "summary.json").read_text())
    assert share["epochs"] == 1 and share["k"] == first["k"]
    assert round(evaluate_file(row["file"], data)["test"]["top1"], 2) == row["top1"]
    (summary,) = report["summary"]
    assert summary["n"] == 1 and summary["top1"] == row["top1"] and summary["top1_std"] is None
    assert long.main(argv)["points"] == report["points"]  # resumed, not retrained
    with pytest.raises(SystemExit):
        long.main([*argv, "--train", "8x-greedy-s0"])  # no such point
    # points made elsewhere (scripts/gpu_frontier.sh) come back measured on this machine's data
    (tmp_path / "res" / "files" / "dense" / "24x-hessian-s0.rlc").write_bytes(b"RLC1 cut off")
    moved = load_benchmark("remeasure_points", "scripts").main(
        [str(tmp_path / "res"), "dense", "--results", str(tmp_path / "here"), "--source",
         str(small_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3", *SMALL_ARGS])
    assert moved["skipped"] == ["24x-hessian-s0.dkm0.04-bn.json"]
    (row,) = [json.loads(p.read_text())["value"]
              for p in (tmp_path / "here" / "points" / "dense").glob("*.dkm0.04-bn.json")]
    first = {p["method"]: p for p in result["points"]}["greedy"]
    assert row["top1"] == row["top1_device"] == first["top1"]  # the same data: the same figures
    assert Path(row["file"]).is_file() and Path(row["file"]).parent == tmp_path / "here" / "files" / "dense"
    assert (tmp_path / "here" / "points" / "dense" / "24x-hessian-s0.search.json").is_file()


def test_long_training_reuses_a_twin_training_only():
    bench = load_benchmark("long_training")

    def point(k: int, seed: int) -> dict:
        return {"seed": seed, "found": {"best": {"k": {"a": k}, "rate": {"c": 0.1}}}}

    points = {"16x-greedy-s0": point(4, 0), "16x-ddpg-s0": point(4, 0),
              "16x-ddpg-s1": point(4, 1), "16x-ddpg-s2": point(8, 0)}
    saved = {"16x-greedy-s0/e15": {"point": "16x-greedy-s0"}}
    assert bench._twin(saved, points, "16x-ddpg-s0", "e15")["point"] == "16x-greedy-s0"
    assert bench._twin(saved, points, "16x-ddpg-s0", "e10") is None  # another variant
    assert bench._twin(saved, points, "16x-ddpg-s1", "e15") is None  # another training seed
    assert bench._twin(saved, points, "16x-ddpg-s2", "e15") is None  # another policy
    assert bench.variant(15, None) == "e15"
    assert bench.variant(15, "checkpoints/scratch-resnet32/best.safetensors") == "e15-scratch-resnet32"
    assert bench.variant(15, "resnet32") == "e15-resnet32"
    assert bench.variant(15, None, "start-or-best") == "e15-select-start-or-best"


def test_short_ft_rank_rebuilds_runs_and_resumes(image_tar: Path, tmp_path: Path):
    from rlcompress.models import model_spec, save_checkpoint

    mod = load_benchmark("short_ft_rank")
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=3)
    save_checkpoint(model, model_spec("resnet20", num_classes=3), tmp_path, "m")
    names = list(clusterable_layers(model))
    arms = []
    for arm, rate in (("whole", 0.0), ("pruned", 0.5)):
        run = tmp_path / arm
        (run / "search").mkdir(parents=True)
        (run / "share").mkdir()
        rates = {"layer1.0.conv1": rate, "layer2.1.conv1": rate}
        (run / "search" / "best_policy.json").write_text(json.dumps(
            {"k": dict.fromkeys(names, 4), "rate": rates}))
        (run / "share" / "summary.json").write_text(json.dumps({"val_top1": 50.0}))
        arms += ["--arm", f"{arm}={run}"]
    args = ["--model", str(tmp_path / "m.safetensors"), *arms, "--ft-steps", "0", "2",
            "--name", "tiny", "--source", str(image_tar), "--data-dir", str(tmp_path / "d"),
            "--val-size", "3", "--threads", "1", "--out", str(tmp_path / "rank.json")]
    summary = mod.main(args)
    rows = {r["arm"]: r for r in summary["rows"]}
    assert set(rows) == {"whole", "pruned"} and rows["whole"]["rates"] == {}
    assert all(0 <= r[f] <= 100 for r in rows.values() for f in ("pre", "ft0", "ft2"))
    assert mod.main(args)["rows"] == summary["rows"]  # finished arms are not measured again


def test_frontier_refines_only_searched_strategies():
    from rlcompress.jobs.frontier import FrontierConfig, _search_cfg

    cfg = FrontierConfig(refine=12)
    assert _search_cfg(cfg, "ddpg", 0, 1000).refine == 12
    assert _search_cfg(cfg, "random", 1, 1000).refine == 12
    assert _search_cfg(cfg, "hessian", 0, 1000).refine == 0
    with pytest.raises(ValueError, match="refine"):
        FrontierConfig(refine=-1)


def test_frontier_seeds_per_strategy():
    from rlcompress.jobs.frontier import FrontierConfig, _seeds

    cfg = FrontierConfig(seeds=3, random_seeds=1)
    assert [_seeds(cfg, s) for s in ("ddpg", "random", "greedy")] == [3, 1, 1]
    assert _seeds(FrontierConfig(seeds=2), "random") == 2


def test_record_keys_give_back_the_settings_they_were_trained_with():
    from rlcompress.jobs.frontier import FrontierConfig, _train_key, config_from_record

    # a committed record made before prune_select and share_dkm_bn were named in keys
    root = Path(__file__).resolve().parents[1] / "results" / "frontier" / "points" / "resnet20"
    old = json.loads((root / "8x-greedy-s0.dkm0.04.json").read_text())["key"]
    assert "prune_select" not in old["train"] and "share_dkm_bn" not in old["train"]
    cfg = config_from_record(old, threads=1)
    assert cfg.prune_select == "best" and not cfg.share_dkm_bn and cfg.threads == 1
    assert cfg.prune_rates == old["search"]["prune_rates"]
    assert _train_key(cfg)["train"] == old["train"]  # it would find its own record again
    # today's defaults name them, and come back unchanged
    new = FrontierConfig(prune_rates="0,0.5")
    assert new.prune_select == "start-or-best" and new.share_dkm_bn
    back = config_from_record({**_train_key(new), "search": {"prune_rates": "0,0.5"}})
    assert back == new


def test_frontier_plan_only_seeds_splits_searched_seeds_only():
    from rlcompress.jobs.frontier import FrontierConfig, frontier_plan

    cfg = FrontierConfig(ratios=(24.0,), strategies=("greedy", "ddpg"), seeds=3, only_seeds=(2,))
    plan = frontier_plan(cfg, {24.0: 100}, 2400)
    assert [(s, seed) for _, _, s, seed, _ in plan] == [("greedy", 0), ("ddpg", 2)]
    full = frontier_plan(FrontierConfig(ratios=(24.0,), strategies=("ddpg",)), {24.0: 100}, 2400)
    assert [seed for *_, seed, _ in full] == [0, 1, 2]


def test_points_outside_plan_names_this_models_other_finished_points(tmp_path: Path):
    from rlcompress.jobs.frontier import (
        FrontierConfig,
        frontier_plan,
        point_tag,
        points_outside_plan,
    )

    assert point_tag(24.0, "ddpg", 1) == "24x-ddpg-s1"
    assert point_tag(0.0, "/32", 0) == "rules-d32-s0"
    for tag, model, mode in (("24x-ddpg-s0", "abc", "dkm0.04-bn"), ("8x-greedy-s0", "abc",
                             "dkm0.04-bn"), ("8x-uniform-s0", "other", "dkm0.04-bn"),
                             ("8x-hessian-s0", "abc", "hard")):
        (tmp_path / f"{tag}.{mode}.json").write_text(json.dumps({"key": {
            "model": model, "search": {"seed": 0}, "train": {"share_lr": 0.01}}}))
    (tmp_path / "24x-greedy-s0.dkm0.04-bn.json").write_text(json.dumps({"key": {
        "model": "abc", "train": {"share_lr": 0.02}}}))  # trained otherwise: another frontier
    (tmp_path / "8x-random-s0.dkm0.04-bn.json").write_text("not json")
    (tmp_path / "8x-greedy-s0.search.json").write_text(json.dumps({"key": {"model": "abc"}}))
    cfg = FrontierConfig(ratios=(24.0,), strategies=("ddpg",), seeds=1)
    plan = frontier_plan(cfg, {24.0: 100}, 2400)
    key = {"model": "abc", "train": {"share_lr": 0.01}}
    # other weights, another training mode, a search record and a broken file are not points
    assert points_outside_plan(tmp_path, "dkm0.04-bn", key, plan) == ["8x-greedy-s0"]
    cfg = FrontierConfig(ratios=(24.0, 8.0), strategies=("ddpg", "greedy"), seeds=1)
    assert points_outside_plan(tmp_path, "dkm0.04-bn", key,
                               frontier_plan(cfg, {24.0: 100, 8.0: 300}, 2400)) == []
    assert points_outside_plan(tmp_path / "none", "dkm0.04-bn", key, plan) == []
    # the benchmarks read the same records strictly: a broken record is an error there
    from rlcompress.jobs.frontier import point_records

    assert set(point_records(tmp_path, "hard")) == {"8x-hessian-s0"}
    with pytest.raises(ValueError):
        point_records(tmp_path, "dkm0.04-bn", strict=True)


def test_frontier_verdicts_need_two_standard_errors_and_count_fitting_peers():
    from rlcompress.jobs.frontier import verdicts

    def row(method, budget, top1, std=0.0, seeds=1, size=None):
        return {"method": method, "budget_bytes": budget, "target_ratio": 1000 / budget,
                "file_bytes": size or budget, "top1": top1, "top1_std": std, "seeds": seeds}

    table = [row("ddpg", 100, 80.0, 0.3, 3), row("greedy", 100, 79.8),
             row("ddpg", 50, 75.0, 0.1, 3), row("greedy", 50, 74.0), row("uniform", 50, 74.5),
             row("greedy", 25, 70.0), row("ddpg", 25, 71.0),
             row("coremltools-DKM-1ep", 55, 90.0), row("coremltools-SKM-0ep", 49, 76.0)]
    calls = {c["budget_bytes"]: c for c in verdicts(table)}
    # 0.2 ahead with s.e. 0.17: not a win; the peer at 55 bytes does not fit a 50-byte budget
    assert calls[100]["best_other"] == "coremltools-DKM-1ep" and not calls[100]["wins"]
    assert calls[50]["best_other"] == "coremltools-SKM-0ep" and calls[50]["margin"] == -1.0
    assert not calls[25]["wins"]  # one seed is no evidence
    table[3]["top1"], table[8]["top1"] = 74.0, 74.7
    assert verdicts(table)[1]["wins"] and verdicts(table)[1]["best_other"] == "coremltools-SKM-0ep"
    # counting a single-seed rival's training noise: 0.3 ahead, s.e. 0.058 and 0.2 -> not a win
    win = verdicts(table)[1]
    assert win["wins_with_rival_noise"] and win["rival_se"] == 0.0
    strict = verdicts(table, noise_sd=0.2)[1]
    assert strict["wins"] and not strict["wins_with_rival_noise"] and strict["rival_se"] == 0.2
    table[8].update(top1_std=0.1, seeds=4)  # a rival with seeds: its own standard error
    assert verdicts(table, noise_sd=0.2)[1]["rival_se"] == 0.05
    for r in table:
        r["val_top1"] = r["top1"] - 1
    assert verdicts(table)[1]["val_margin"] == 0.3


def test_choose_by_training_keeps_the_best_trained_reward_among_own_and_demos():
    bench = load_benchmark("frontier_reward")
    search = {"allocator_demos": "hessian,greedy"}

    def row(method, seed, ft, top1):
        return {"method": method, "seed": seed, "budget_bytes": 10, "target_ratio": 40.0,
                "reward_ft": ft, "top1": top1, "val_top1": top1 + 1, "search": search}

    rows = [row("ddpg", 0, 50.0, 80.0), row("ddpg", 1, 70.0, 81.0), row("greedy", 0, 60.0, 82.0),
            row("hessian", 0, 55.0, 79.0), row("random", 0, 99.0, 70.0)]
    (call,) = bench.choose_by_training(rows)
    assert call["picked"] == ["greedy-s0", "ddpg-s1"]  # random was not a demonstration
    assert call["top1"] == 81.5 and call["ddpg_top1"] == 80.5 and call["best_demo"] == "greedy"


def test_training_noise_pools_repeats_and_bounds_any_reward():
    bench = load_benchmark("training_noise")
    sd, dof = bench.pooled_sd([[1.0, 3.0], [5.0, 5.0, 8.0]])
    assert dof == 3 and sd == pytest.approx(np.sqrt((2.0 + 6.0) / 3))
    assert bench.pooled_sd([[1.0], [2.0]]) == (None, 0)
    values = [80.0, 81.0, 82.0, 83.0, 84.0]
    assert bench.spearman_ceiling([values], 0.0) == 1.0  # no noise: a perfect reward ranks all
    assert bench.spearman_ceiling([values], 100.0) < 0.2  # noise above the spread: none can
    assert 0.2 < bench.spearman_ceiling([values, values], 1.0) < 1.0
    assert bench.spearman_ceiling([[1.0, 2.0]], 0.1) is None
    best = {"k": {"a": 4}, "rate": {}}

    def point(seed, budget=10, k=4):
        return {"seed": seed, "budget_bytes": budget, "found": {"best": {**best, "k": {"a": k}}}}

    # the same policy from two seeds is a repeat; the same seed twice is one deterministic run
    points = {"x-ddpg-s0": point(0), "x-greedy-s0": point(0), "x-ddpg-s1": point(1),
              "x-ddpg-s2": point(2, k=8), "y-ddpg-s0": point(0, budget=20)}
    assert bench.same_policy_groups(points) == [["x-ddpg-s0", "x-ddpg-s1"]]


def test_training_noise_verdicts_use_the_retrained_rivals_own_spread(tmp_path: Path):
    import argparse

    bench = load_benchmark("training_noise")

    def row(method, top1, std=0.0, seeds=1):
        return {"method": method, "budget_bytes": 50, "target_ratio": 20.0, "file_bytes": 49,
                "top1": top1, "top1_std": std, "seeds": seeds, "val_top1": top1}

    (tmp_path / "f.json").write_text(json.dumps(
        {"rows": [row("ddpg", 84.0, 0.1, 3), row("greedy", 84.1)]}))
    points = {"20x-greedy-s0": {"method": "greedy", "budget_bytes": 50}}
    runs = [{"top1": 84.1, "val_top1": 84.0}, {"top1": 83.5, "val_top1": 83.6},
            {"top1": 83.6, "val_top1": 83.5}]
    groups = [{"source": "retrained", "point": "20x-greedy-s0", "runs": runs}]
    args = argparse.Namespace(frontier=str(tmp_path / "f.json"), name="x")
    (call,) = bench._rival_verdicts(args, points, groups, 0.2)["verdicts_with_retrained_rivals"]
    # greedy's single run looked 0.1 ahead; over its three trainings it is 0.27 behind
    assert call["best_other_top1"] == 83.73 and call["margin"] == 0.27
    assert call["rival_se"] == round(0.32 / np.sqrt(3), 3)  # std 0.32 over 3 runs
    assert not call["wins_with_rival_noise"]
    assert bench._rival_verdicts(argparse.Namespace(frontier=str(tmp_path / "none.json"),
                                                    name="x"), points, groups, 0.2) == {}


def test_prune_start_reads_each_pruned_point(tmp_path: Path):
    mod = load_benchmark("prune_start", "scripts")
    prune = tmp_path / "run" / "8x" / "greedy-s0" / "prune"
    (prune / "finetune").mkdir(parents=True)
    (tmp_path / "run" / "8x" / "uniform-s0" / "share").mkdir(parents=True)  # pruned nothing
    (prune / "summary.json").write_text(json.dumps(
        {"val_top1_before_finetune": 91.5, "best_epoch": 0, "val_top1": 91.5, "top1": 90.9,
         "weights_kept": 90, "weights_dense": 100}))
    (prune / "finetune" / "metrics.csv").write_text("epoch,val_top1\n1,79.2\n2,89.1\n")
    report = mod.main([str(tmp_path / "run"), "--out", str(tmp_path / "o.json")])
    (row,) = report["rows"]
    assert row["point"] == "8x-greedy-s0" and row["val_per_epoch"] == [79.2, 89.1]
    assert row["chosen_epoch"] == 0 and json.loads((tmp_path / "o.json").read_text()) == report


def test_compare_points_pairs_the_committed_8x_retraining(tmp_path: Path):
    mod = load_benchmark("compare_points", "scripts")
    report = mod.main(["--base", "resnet32", "--new", "resnet32-8x-start",
                       "--out", str(tmp_path / "c.json")])
    rows = {r["point"]: r for r in report["rows"]}
    # uniform and DDPG seed 1 prune nothing: only their searches were copied, so no pair
    assert set(rows) == {"8x-ddpg-s0", "8x-ddpg-s2", "8x-greedy-s0", "8x-hessian-s0",
                         "8x-random-s0"}
    assert rows["8x-hessian-s0"]["changed"] == {"prune_select": ["best", "start-or-best"]}
    assert rows["8x-random-s0"]["test_change"] == 0.0  # the fine-tune won: the same point
    assert report["test_changes_positive"] == 4
    assert json.loads((tmp_path / "c.json").read_text()) == report


def test_paired_test_counts_discordant_images_and_mcnemar_is_exact():
    mod = load_benchmark("paired_test", "scripts")
    a = torch.tensor([1, 1, 0, 0, 1, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 1, 1, 1], dtype=torch.bool)
    row = mod.paired(a, b)
    assert (row["only_a_right"], row["only_b_right"]) == (1, 2)
    assert row["difference"] == pytest.approx(100 / 6, abs=1e-3)
    # per-image differences (0, -1, 1, 1, 0, 0): population variance over n, as a percentage
    d = torch.tensor([0.0, -1, 1, 1, 0, 0])
    assert row["difference_se"] == pytest.approx(100 * (d.var(unbiased=False) / 6).sqrt().item(),
                                                 abs=1e-3)
    assert mod.mcnemar_p(3, 12) == pytest.approx(2 * 576 / 2**15)  # binomial(15, 1/2) tail
    assert mod.mcnemar_p(7, 7) == 1.0 and mod.mcnemar_p(0, 0) == 1.0


def test_reward_vs_point_pairs_each_search_with_its_record(tmp_path: Path):
    mod = load_benchmark("reward_vs_point", "scripts")
    search = tmp_path / "run" / "16x" / "ddpg-s1" / "search"
    search.mkdir(parents=True)
    (search / "summary.json").write_text(json.dumps(
        {"best": {"val_top1": 76.5, "val_top1_rescored": 76.5}}))
    (tmp_path / "run" / "16x" / "greedy-s0" / "search").mkdir(parents=True)  # no record: skipped
    records = tmp_path / "points"
    records.mkdir()
    (records / "16x-ddpg-s1.dkm0.04-bn.json").write_text(json.dumps(
        {"key": {}, "value": {"val_top1": 76.06, "top1": 76.01}}))
    (row,) = mod.rows(tmp_path / "run", records, "dkm0.04-bn")
    assert row["point"] == "16x-ddpg-s1" and row["overrated"] == 0.44
    assert row["walk_start_episode"] is None  # no config.json: no walk known
    # the walk starts from the best re-scored of the search's own episodes, not its own best
    rescored = [{"episode": e, "val_top1_rescored": v, "cost": 1.0}
                for e, v in ((2, 76.3), (44, 72.6), (246, 76.5))]
    (search / "summary.json").write_text(json.dumps(
        {"best": {"episode": 246, "val_top1": 76.5, "val_top1_rescored": 76.5},
         "rescored": rescored}))
    (search / "config.json").write_text(json.dumps(
        {"search": {"strategy": "ddpg", "episodes": 200, "refine": 60}}))
    (row,) = mod.rows(tmp_path / "run", records, "dkm0.04-bn")
    assert (row["chosen_episode"], row["walk_start_episode"]) == (246, 2)
    # an allocator's one policy is episode 1; its walk's best (here 30) comes after it
    (search / "config.json").write_text(json.dumps(
        {"search": {"strategy": "greedy", "episodes": 200, "refine": 60}}))
    rescored[:] = [{"episode": 1, "val_top1_rescored": 76.3, "cost": 1.0},
                   {"episode": 30, "val_top1_rescored": 76.7, "cost": 1.0}]
    (search / "summary.json").write_text(json.dumps(
        {"best": {"episode": 30, "val_top1": 76.7, "val_top1_rescored": 76.7},
         "rescored": rescored}))
    assert mod.rows(tmp_path / "run", records, "dkm0.04-bn")[0]["walk_start_episode"] == 1
    # a search that chose by KL started its walk from the own candidate of least KL
    (search / "config.json").write_text(json.dumps(
        {"search": {"strategy": "ddpg", "episodes": 200, "refine": 60, "choose_by": "kl"}}))
    rescored[:] = [{"episode": e, "val_top1_rescored": v, "val_kl_rescored": kl, "cost": 1.0}
                   for e, v, kl in ((1, 76.0, 0.41), (2, 76.3, 0.45), (150, 76.6, 0.43))]
    (search / "summary.json").write_text(json.dumps(
        {"best": {"episode": 1, "val_top1": 76.0, "val_top1_rescored": 76.0},
         "rescored": rescored}))
    assert mod.rows(tmp_path / "run", records, "dkm0.04-bn")[0]["walk_start_episode"] == 1


def _briefly_trained() -> tuple:
    """The tiny network after three SGD steps on planted data: right on some images and wrong
    on others, so that small changes of batch norm or precision move its top-1."""
    from rlcompress.data import to_model_input

    model, spec = _tiny()
    data = planted_data(n_train=128, n_val=400)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = to_model_input(data.train.images, data.mean, data.std), data.train.labels
    model.train()
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval(), spec, data


@pytest.mark.parametrize("strategy", ["random", "greedy"])
def test_final_rescore_scores_the_choice_as_its_finished_point_validates(tmp_path: Path,
                                                                          strategy: str):
    """With ``final_rescore`` the re-scored value of a policy is, to the image, the validation
    top-1 of the model the share job builds from it (float32 batch norm on the sharing's
    images, bf16 evaluation unfolded), not the reward's cheaper estimate of it."""
    import copy

    from rlcompress.clustering.quantize import quantize
    from rlcompress.clustering.sharing import ShareConfig
    from rlcompress.engine.batches import evaluate_model
    from rlcompress.search.evaluator import PolicyEvaluator

    model, spec, data = _briefly_trained()
    share = ShareConfig(calibration_images=32, bn_images=96)

    def finished(ks: dict[str, int]) -> float:
        net = copy.deepcopy(model)
        quantize(net, ks, data, share)
        return evaluate_model(net, data, "val", "bf16", "cpu")["top1"]

    names = list(clusterable_layers(model))
    exact = PolicyEvaluator(model, names, data, 10**9, share, exact=True)
    fast = PolicyEvaluator(model, names, data, 10**9, share)
    uniform = [{n: k for n in names} for k in (2, 3, 4)]
    vals = [finished(ks) for ks in uniform]
    assert [exact(ks) for ks in uniform] == vals and len(set(vals)) == 3
    assert [fast(ks) for ks in uniform] != vals  # bf16 batch norm, folded: a few images differ
    cfg = SearchConfig(**{**CFG, "rescore": 2, "k_max": 8, "target_ratio": 50.0},
                       strategy=strategy, episodes=4,
                       refine=3, reward_bn_images=16, final_rescore=True)
    summary = run_search(model, spec, data, tmp_path / "s", cfg, share)
    best = summary["best"]
    assert best["val_top1_rescored"] == round(finished(best["k"]), 3)
    assert summary["episodes"] > (1 if strategy == "greedy" else 4)  # an allocator walks too


@pytest.mark.parametrize("strategy", ["random", "greedy"])
def test_choose_by_kl_walks_and_chooses_on_the_divergence(tmp_path: Path, strategy: str):
    """With ``choose_by="kl"`` the walk climbs -KL on the re-scoring images (its rows' reward)
    and the final choice is the candidate of least KL, whose recorded KL and top-1 are the
    re-scorer's own."""
    import csv

    from rlcompress.clustering.sharing import ShareConfig
    from rlcompress.search.evaluator import PolicyEvaluator

    model, spec, data = _briefly_trained()
    share = ShareConfig(calibration_images=32, bn_images=96)
    cfg = SearchConfig(**{**CFG, "rescore": 3, "k_max": 8, "target_ratio": 50.0},
                       strategy=strategy, episodes=6, refine=4, reward_bn_images=16,
                       final_rescore=True, choose_by="kl")
    summary = run_search(model, spec, data, tmp_path / "s", cfg, share)
    names = list(clusterable_layers(model))
    exact = PolicyEvaluator(model, names, data, 10**9, share, exact=True)
    cands = summary["rescored"]
    assert all("val_kl_rescored" in c for c in cands) and len(cands) >= 2
    best = summary["best"]
    assert best["val_kl_rescored"] == min(c["val_kl_rescored"] for c in cands)
    got = exact.scores(best["k"], kl=True)
    assert best["val_kl_rescored"] == pytest.approx(got["kl"], abs=1e-5)
    assert best["val_top1_rescored"] == round(got["top1"], 3)
    with open(tmp_path / "s" / "episodes.csv") as f:
        walk = [r for r in csv.DictReader(f) if r["sigma"] == "refine"]
    assert walk
    for r in walk:  # reward: -KL of the row's policy; val_top1: its top-1, as ever
        ks = dict(zip(names, map(int, r["ks"].split(";")), strict=True))
        got = exact.scores(ks, kl=True)
        assert float(r["reward"]) == pytest.approx(-got["kl"], abs=1e-5)
        assert float(r["val_top1"]) == round(got["top1"], 3)
    with pytest.raises(ValueError, match="rescore"):
        SearchConfig(choose_by="kl", rescore=0)
    with pytest.raises(ValueError, match="choose_by"):
        SearchConfig(choose_by="loss")


def test_choose_by_keys_only_when_kl():
    from rlcompress.jobs.frontier import FrontierConfig, _search_cfg, _search_key

    kl = FrontierConfig(choose_by="kl")
    assert _search_key("d", kl, "ddpg", 0, 1000)["search"]["choose_by"] == "kl"
    assert "choose_by" not in _search_key("d", FrontierConfig(), "ddpg", 0, 1000)["search"]
    assert _search_key("d", kl, "greedy", 0, 1000) == _search_key("d", FrontierConfig(),
                                                                   "greedy", 0, 1000)
    assert _search_cfg(kl, "greedy+walk", 0, 1000).choose_by == "kl"
    with pytest.raises(ValueError, match="choose_by"):
        FrontierConfig(choose_by="loss")


def test_final_rescore_keys_only_searched_points_and_leaves_old_keys_alone():
    from rlcompress.jobs.frontier import FrontierConfig, _search_cfg, _search_key

    old = _search_key("d", FrontierConfig(), "ddpg", 0, 1000)
    assert "final_rescore" not in old["search"]  # the records made before it still match
    new = FrontierConfig(final_rescore=True)
    assert _search_key("d", new, "ddpg", 0, 1000)["search"]["final_rescore"] is True
    assert _search_key("d", new, "greedy", 0, 1000) == _search_key("d", FrontierConfig(), "greedy",
                                                                    0, 1000)
    assert _search_cfg(new, "random", 0, 1000).final_rescore


def test_ddpg_imitate_keys_only_ddpg_points_and_reaches_the_agent(tmp_path: Path, monkeypatch):
    from rlcompress.jobs import frontier as fr

    sil = fr.FrontierConfig(ddpg_imitate=10.0)
    assert fr._search_key("d", sil, "ddpg", 0, 1000)["ddpg"] == {"imitate": 10.0}
    assert "ddpg" not in fr._search_key("d", fr.FrontierConfig(), "ddpg", 0, 1000)
    for other in ("random", "greedy", "greedy+walk"):  # their records still match
        assert fr._search_key("d", sil, other, 0, 1000) == fr._search_key(
            "d", fr.FrontierConfig(), other, 0, 1000)
    with pytest.raises(ValueError, match="ddpg_imitate"):
        fr.FrontierConfig(ddpg_imitate=-1.0)
    seen = {}

    def fake_search(model, out, cfg, share_cfg, ddpg_cfg, *rest, **kw):
        seen["ddpg"] = ddpg_cfg
        return {"best": {"k": {}}}

    monkeypatch.setattr(fr, "search", fake_search)
    fr._run_search("m", tmp_path, sil, None, "ddpg", 0, 1000)
    assert seen["ddpg"].imitate == 10.0


def test_walk_suffix_runs_the_allocator_then_the_searches_walk():
    from rlcompress.jobs.frontier import FrontierConfig, _search_cfg, _search_key, _seeds

    cfg = FrontierConfig(refine=12, final_rescore=True,
                         strategies=("greedy", "greedy+walk", "ddpg"))
    walked, plain = _search_cfg(cfg, "greedy+walk", 0, 1000), _search_cfg(cfg, "greedy", 0, 1000)
    assert walked.strategy == plain.strategy == "greedy"
    assert (walked.refine, walked.final_rescore) == (12, True)
    assert (plain.refine, plain.final_rescore) == (0, False)
    assert _search_key("d", cfg, "greedy+walk", 0, 1000) != _search_key("d", cfg, "greedy", 0, 1000)
    assert _seeds(cfg, "greedy+walk") == 3 and _seeds(cfg, "greedy") == 1  # the walk's seeds
    for bad in ("ddpg+walk", "nosuch+walk"):
        with pytest.raises(ValueError, match="unknown strategies"):
            FrontierConfig(refine=12, strategies=(bad,))
    with pytest.raises(ValueError, match="refine > 0"):
        FrontierConfig(strategies=("greedy+walk",))
