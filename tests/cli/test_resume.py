"""Reliability: SIGKILL then resume is bit-identical on CPU; SIGTERM checkpoints and says how to resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow
ARGS = [*TINY_SEARCH, "search.epochs=3", "search.steps_per_epoch=6", "trainer.checkpoint_every_steps=2"]


def start(run_dir: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nasctl", "search", *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(cond, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, "timed out"
        time.sleep(0.02)


def checkpoint_sums(run: Path) -> dict:
    try:
        return json.loads((run / "manifest.json").read_text()).get("checkpoints", {})
    except (OSError, json.JSONDecodeError):
        return {}


def final_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["loop"]["model"]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, fashion):
    ref = nasctl("search", *ARGS, "hydra.run.dir=ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    proc = start("killed", tmp_path)
    wait_for(lambda: (killed / "metrics.jsonl").exists(), proc)  # epoch 0 done
    after_epoch = checkpoint_sums(killed).get("last.pt")
    wait_for(lambda: checkpoint_sums(killed).get("last.pt") not in (None, after_epoch), proc)  # a mid-epoch checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"

    resumed = nasctl("search", "resume=killed", "trainer=cpu", "trainer.progress=false", cwd=tmp_path)  # own config
    assert resumed.returncode == 0, resumed.stderr
    a, b = final_state(tmp_path / "ref"), final_state(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    lines = [json.loads(x) for x in (killed / "metrics.jsonl").read_text().splitlines()]
    ref_lines = [json.loads(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [0, 1, 2]
    assert [r["train_loss"] for r in lines] == [r["train_loss"] for r in ref_lines]
    assert json.loads((killed / "manifest.json").read_text())["status"] == "completed"


def test_sigterm_checkpoints_and_exits_interrupted(tmp_path, fashion):
    run = tmp_path / "term"
    proc = start("term", tmp_path)
    wait_for(lambda: bool(checkpoint_sums(run)), proc)
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3
    assert f"nasctl search resume={run}" in err.replace("\n", "") and "Traceback" not in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    again = nasctl("search", *ARGS, "resume=term", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    done = nasctl("search", *ARGS, "resume=term", cwd=tmp_path)
    assert done.returncode == 2 and "completed" in done.stderr


@pytest.mark.parametrize("stage", ["search", "retrain"])
def test_resume_true_with_nothing_unfinished_is_a_clear_error(tmp_path, stage):
    out = nasctl(stage, "resume=true", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"no unfinished {stage} run under runs/{stage}" in " ".join(out.stderr.split())
    assert not (tmp_path / "runs" / stage).exists() or not any((tmp_path / "runs" / stage).iterdir())
