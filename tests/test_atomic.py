"""Every file a resume, a table or a later stage reads is written atomically."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlcompress.fileio import atomic_path, write_json

SRC = Path(__file__).resolve().parents[1] / "src" / "rlcompress"


def test_failed_write_leaves_the_previous_file(tmp_path: Path):
    target = tmp_path / "state.json"
    write_json(target, {"episode": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"episo')  # a partial write, then the writer dies
        raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"episode": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left behind
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as a plain open() would make it


def test_no_direct_writes_in_the_package():
    """Writers that need a path go through atomic_path; text and JSON through fileio."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "fileio.py":
            continue
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if re.search(r"\.write_(text|bytes)\(|json\.dump\(", line) and "scratch file" not in line:
                offenders.append(f"{path.name}:{i + 1}: {line.strip()}")
            if re.search(r"\b(torch\.save|save_file|np\.savez)\(", line) and not any(
                    "atomic_path" in prev for prev in lines[max(0, i - 2) : i + 1]):
                offenders.append(f"{path.name}:{i + 1}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


KILLER = r"""
import os, signal, sys, tempfile
import rlcompress.fileio as fileio
from test_search import CFG, _tiny
from conftest import planted_data
from rlcompress.search import DDPGConfig, SearchConfig, run_search

real = tempfile.mkstemp
seen = {"n": 0}

def mkstemp(prefix="", suffix="", dir=None):
    fd, name = real(prefix=prefix, suffix=suffix, dir=dir)
    if prefix.startswith(".agent.pt."):
        seen["n"] += 1
        if seen["n"] == 4:  # the temp file exists, empty: killed before a byte is written
            os.kill(os.getpid(), signal.SIGKILL)
    return fd, name

fileio.tempfile.mkstemp = mkstemp
model, spec = _tiny()
data = planted_data(n_train=64, n_val=64, size=16)
run_search(model, spec, data, sys.argv[1], SearchConfig(**CFG), None,
           DDPGConfig(warmup=2, hidden=32, batch_size=8))
"""


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k not in ("seconds",)} for r in csv.DictReader(f)]


def test_search_killed_mid_write_resumes_exactly(tmp_path: Path):
    from conftest import planted_data
    from rlcompress.search import DDPGConfig, SearchConfig, run_search
    from test_search import CFG, _tiny

    tests = Path(__file__).parent
    cut = tmp_path / "cut"
    proc = subprocess.run([sys.executable, "-c", KILLER, str(cut)], cwd=tests,
                          env={**__import__("os").environ, "PYTHONPATH": str(tests)},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-2000:]  # it really was killed
    assert any(p.name.startswith(".agent.pt.") for p in cut.iterdir())  # the orphaned temp
    data = planted_data(n_train=64, n_val=64, size=16)
    dcfg = DDPGConfig(warmup=2, hidden=32, batch_size=8)
    model, spec = _tiny()
    run_search(model, spec, data, cut, SearchConfig(**CFG), None, dcfg, resume=True)
    model, spec = _tiny()
    run_search(model, spec, data, tmp_path / "full", SearchConfig(**CFG), None, dcfg)
    assert _rows(cut / "episodes.csv") == _rows(tmp_path / "full" / "episodes.csv")
