"""Numerical guard: a diverging search stops with a clear message and keeps its last good checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow


def test_non_finite_loss_stops_the_run(tmp_path, fashion):
    out = nasctl("search", *TINY_SEARCH, "search.epochs=3", "search.w_lr=1e30", "search.w_lr_min=1e30",
                 "hydra.run.dir=nan", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Non-finite" in out.stderr and "Traceback" not in out.stderr
    manifest = json.loads((tmp_path / "nan" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "Non-finite" in manifest["reason"]
    for name in manifest["checkpoints"]:  # every checkpoint kept is finite
        state = torch.load(tmp_path / "nan" / "checkpoints" / name, weights_only=False)["loop"]["model"]
        assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
