"""benchmarks/budget_room.py: the room a file budget leaves the joint allocators."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import load_benchmark
from rlcompress.jobs.frontier import model_digest
from rlcompress.models import build_model, model_spec, save_checkpoint


def test_budget_room_shrinks_with_the_budget_and_grows_with_the_space(tmp_path: Path):
    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20"), model_spec("resnet20"), tmp_path, "m")
    points = tmp_path / "points"
    points.mkdir()  # one finished point at 40x: every chain at 0.6, k = 2 in all but one layer
    (points / "40x-greedy-s0.search.json").write_text(json.dumps({"value": {}}))
    bench = load_benchmark("budget_room")
    digest = model_digest(str(tmp_path / "m.safetensors"))
    (points / "40x-greedy-s0.dkm0.04.json").write_text(json.dumps({
        "key": {"model": digest}, "value": {"method": "greedy", "target_ratio": 40.0,
                                            "top1": 80.0, "rate": {"a": 0.6, "b": 0.3},
                                            "k": {"x": 2, "y": 2, "z": 2, "w": 8}}}))
    report = bench.main(["--model", str(tmp_path / "m.safetensors"), "--name", "m",
                         "--points", str(points), "--ratios", "16", "40",
                         "--out", str(tmp_path / "room.json")])
    assert json.loads((tmp_path / "room.json").read_text())["rows"] == report["rows"]
    r16, r40 = (row["spaces"] for row in report["rows"])
    for spaces in (r16, r40):
        f = spaces["frontier"]
        assert f["fixed"] < f["floor"] < f["floor_unpruned"]
        assert f["room"] == round((f["limit"] - f["floor"]) / f["limit"], 4)
        # more rates or smaller batch norms lower the floor: more room, never less
        assert spaces["rates to 0.8"]["floor"] < f["floor"]
        assert spaces["compact batch norm"]["fixed"] < f["fixed"]
        assert spaces["rates to 0.8, compact batch norm"]["room"] > spaces["rates to 0.8"]["room"]
        # crediting pruned chains' floats lowers the floor (fewer batch-norm channels)
        assert spaces["pruned floats credited"]["floor"] < f["floor"]
        assert spaces["pruned floats credited"]["floor_unpruned"] == f["floor_unpruned"]
    assert r16["frontier"]["floor"] == r40["frontier"]["floor"]  # the floor is the model's
    assert 0 < r40["frontier"]["room"] < r16["frontier"]["room"] < 1
    assert report["rows"][0]["frontier_points"] == {}
    assert report["rows"][1]["frontier_points"] == {
        "points": 1, "chains_at_top_rate": 0.5, "layers_at_k2": 0.75, "non_uniform_points": 1,
        "non_uniform_top1_spread": 0.0}
