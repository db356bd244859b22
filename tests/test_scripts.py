"""The shell helpers that start one frontier's run folder from another's
(``scripts/seed_runs.sh``): what they copy, what they leave, and that a rerun resumes."""

from __future__ import annotations

import subprocess
from pathlib import Path

HELPERS = Path(__file__).parent.parent / "scripts" / "seed_runs.sh"


def _bash(script: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -euo pipefail; source {HELPERS}; {script}"],
                          cwd=cwd, capture_output=True, text=True)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _source(tmp: Path) -> Path:
    src = tmp / "src"
    for rel in ("model.json", "16x/ddpg-s0/search/agent.pt", "16x/ddpg-s0/search/episodes.csv",
                "16x/ddpg-s0/search/summary.json", "16x/ddpg-s0/share/model.rlc",
                "16x/greedy-s0/search/allocation.json", "16x/greedy-s0/share/model.rlc"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(rel)
    return src


def test_seed_copies_search_files_and_whole_points(tmp_path: Path) -> None:
    _source(tmp_path)
    r = _bash("seed_folder src dst make-src; "
              "copy_search src dst 16x/ddpg-s0 agent.pt episodes.csv allocation.json; "
              "copy_point src dst 16x/greedy-s0", tmp_path)
    assert r.returncode == 0, r.stderr
    # the agent and the episodes, not the search's summary or the share; a missing file skipped
    assert _tree(tmp_path / "dst") == {
        "model.json", "16x/ddpg-s0/search/agent.pt", "16x/ddpg-s0/search/episodes.csv",
        "16x/greedy-s0/search/allocation.json", "16x/greedy-s0/share/model.rlc"}


def test_seed_never_touches_an_existing_point(tmp_path: Path) -> None:
    _source(tmp_path)
    done = tmp_path / "dst" / "16x" / "ddpg-s0" / "search" / "summary.json"
    done.parent.mkdir(parents=True)
    done.write_text("finished")
    r = _bash("seed_folder src dst make-src; copy_search src dst 16x/ddpg-s0 agent.pt; "
              "copy_point src dst 16x/ddpg-s0", tmp_path)
    assert r.returncode == 0, r.stderr
    assert _tree(tmp_path / "dst" / "16x") == {"ddpg-s0/search/summary.json"}
    assert done.read_text() == "finished"


def test_seed_refuses_a_missing_source(tmp_path: Path) -> None:
    r = _bash("seed_folder nowhere dst scripts/posttrain_frontier.sh", tmp_path)
    assert r.returncode != 0
    assert "run scripts/posttrain_frontier.sh first" in r.stderr
    assert not (tmp_path / "dst").exists()


def test_default_ratios_yield_to_given_ones(tmp_path: Path) -> None:
    r = _bash('default_ratios --only-seeds 0; echo "${ratios[*]}"; '
              'default_ratios --ratios 16; echo "[${ratios[*]}]"', tmp_path)
    assert r.stdout.split("\n")[:2] == ["--ratios 8 12 16", "[]"]
