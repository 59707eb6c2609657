"""`make gpu-check`: without CUDA it stops in one line; GPU_CHECK=cpu runs the whole check at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from nasctl import gpucheck
from tests.conftest import REPO


def make_gpu_check(tmp_path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "GPU_CHECK_OUT": str(tmp_path / "out"), **env}
    return subprocess.run(["make", "-s", "-C", str(REPO), "gpu-check", f"GPU_PYTHON={sys.executable}"], env=full,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_cuda_it_says_so_in_one_line_and_exits_2(tmp_path):
    res = make_gpu_check(tmp_path)
    lines = [x for x in res.stdout.splitlines() if x.strip()]
    assert len(lines) == 1 and "no CUDA GPU here" in lines[0] and "GPU_CHECK=cpu" in lines[0]
    assert "Error 2" in res.stderr and not (tmp_path / "out").exists()


def test_missing_packages_without_wheels_name_make_gpu_wheels(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpucheck, "NEEDED", ("hydra", "nasctl_no_such_package"))
    monkeypatch.setattr(gpucheck, "WHEELS", tmp_path / "none")
    with pytest.raises(SystemExit) as exit_:
        gpucheck.install()
    assert exit_.value.code == 2
    assert "lacks nasctl_no_such_package" in capsys.readouterr().out


@pytest.mark.slow
def test_gpu_check_cpu_runs_tests_bench_and_a_search_per_stabilizer(tmp_path):
    res = make_gpu_check(tmp_path, GPU_CHECK="cpu", OMP_NUM_THREADS="1")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    out = tmp_path / "out"
    report = json.loads((out / "gpu-check.json").read_text())
    assert report["mode"] == "cpu" and all(s["rc"] == 0 for s in report["steps"])
    rates = {(r["case"], r["variant"]): r["rate"] for r in report["bench"]["results"]}
    assert all(rates[case, "eager"] > 0 for case in ("first", "nb201", "retrain"))
    stabilizers = sorted(p.stem for p in (REPO / "conf" / "stabilizer").glob("*.yaml"))
    searched = [r["name"] for r in report["searches"] if r["group"] == "stabilizer"]
    assert searched == stabilizers and all(r["status"] == "completed" for r in report["searches"])
    assert {p["search"] for p in report["projections"]} == {"darts_first_order", "nb201"}
    assert all(p["defaults_h"] > 0 for p in report["projections"])
    assert "projected 50-epoch nb201 search" in res.stdout and "## Projected" in (out / "gpu-check.md").read_text()
