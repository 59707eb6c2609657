"""The nasctl command end to end: Hydra features through Typer, quickstart chain, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasctl import genotype as G
from tests.conftest import TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow


def runs(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("runs/search/**/manifest.json"))


def test_help_lists_stages_and_config_groups(tmp_path):
    top = nasctl("--help", cwd=tmp_path)
    assert top.returncode == 0 and "search" in top.stdout and "derive" in top.stdout
    sub = nasctl("search", "--help", cwd=tmp_path)
    assert sub.returncode == 0
    for group, option in [("space", "darts"), ("dataset", "fashion_mnist"), ("stabilizer", "none"), ("experiment", "quickstart")]:
        assert f"{group}:" in sub.stdout and option in sub.stdout


def test_cfg_job_prints_composed_config(tmp_path):
    out = nasctl("search", "--cfg", "job", "experiment=quickstart", "seed=7", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "name: fashion_mnist" in out.stdout and "seed: 7" in out.stdout
    assert not (tmp_path / "runs").exists(), "--cfg must not start a run"


def test_quickstart_search_then_derive(tmp_path, fashion):
    out = nasctl("search", *TINY_SEARCH, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    (run,) = runs(tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["kind"] == "search" and manifest["seed"] == 2
    assert manifest["checkpoints"]["last.pt"] and (run / "checkpoints" / "last.pt").is_file()
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1] and all(0 <= r["val_acc"] <= 100 for r in lines)

    derived = nasctl("derive", "run=latest", cwd=tmp_path)
    assert derived.returncode == 0, derived.stderr
    g = G.load(run / "genotype.json")
    assert isinstance(g, G.CellGenotype) and len(g.normal) == len(g.reduce) == 8
    assert all(op != "none" for op, _ in g.normal + g.reduce)
    assert all(j < 2 + k // 2 for k, (_, j) in enumerate(g.normal))  # node k//2 sees inputs 0..k//2+1
    assert str(g) in derived.stdout


def test_multirun_and_run_dir_override(tmp_path, fashion):
    out = nasctl("search", "-m", *TINY_SEARCH, "search.epochs=1", "seed=0,1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = runs(tmp_path)
    assert len(found) == 2 and {json.loads((r / "manifest.json").read_text())["seed"] for r in found} == {0, 1}
    own = nasctl("search", *TINY_SEARCH, "search.epochs=1", "hydra.run.dir=mine", cwd=tmp_path)
    assert own.returncode == 0, own.stderr
    assert json.loads((tmp_path / "mine" / "manifest.json").read_text())["status"] == "completed"


