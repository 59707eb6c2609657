"""Multiruns through the CLI: the basic launcher, joblib, and submitit (local) with a requeue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import NB201_TABLE, TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # several jobs on a shared CPU: oversubscribed threads are ~10x slower


def manifests(sweep: Path) -> dict[str, dict]:
    """Job number -> manifest of every run in a sweep directory."""
    return {m.parent.name: json.loads(m.read_text()) for m in sweep.glob("*/manifest.json")}


def epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_multirun_one_sweep_dir_and_a_failed_job_does_not_stop_the_others(tmp_path: Path, fashion: Path) -> None:
    # job 0 fails inside its run (a batch larger than the data: found once the data is loaded), job 1 completes
    args = [*TINY_SEARCH, "search.epochs=1", "search.batch_size=4096,16"]
    out = nasctl("search", "-m", *args, cwd=tmp_path, env=ONE_THREAD)
    assert out.returncode == 1, out.stderr
    assert "job 0 failed" in out.stderr and "search.batch_size=4096 is larger than" in out.stderr
    (sweep,) = (tmp_path / "runs/search/multirun").iterdir()  # both jobs share one sweep directory
    runs = manifests(sweep)
    assert runs["0"]["status"] == "failed"
    assert runs["1"]["status"] == "completed" and "search.batch_size=16" in runs["1"]["overrides"]


def test_joblib_runs_two_jobs_in_parallel(tmp_path: Path, fashion: Path) -> None:
    out = nasctl(
        "search", "-m", *TINY_SEARCH, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
        "hydra.sweep.dir=sweep", cwd=tmp_path, env=ONE_THREAD,
    )
    assert out.returncode == 0, out.stderr
    runs = manifests(tmp_path / "sweep")
    assert {r["seed"] for r in runs.values()} == {0, 1}
    assert all(r["status"] == "completed" for r in runs.values())
    assert all(epochs(tmp_path / "sweep" / n) == [0, 1] for n in runs)
    assert max(r["started"] for r in runs.values()) < min(r["ended"] for r in runs.values())  # they overlapped
    again = nasctl(
        "search", "-m", *TINY_SEARCH, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=0,1",
        "hydra.sweep.dir=sweep", "resume=true", cwd=tmp_path, env=ONE_THREAD,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("is a completed search; kept as it is") == 2
    assert manifests(tmp_path / "sweep") == runs and all(epochs(tmp_path / "sweep" / n) == [0, 1] for n in runs)


def _descendants(pid: int) -> list[int]:
    """All processes below `pid` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job process through /proc")
def test_submitit_requeue_checkpoints_and_resumes(tmp_path: Path, fashion: Path) -> None:
    """SIGUSR2 (SLURM's pre-timeout signal) mid-run: nasctl checkpoints, submitit requeues, resume=true finishes."""
    args = [*TINY_SEARCH, "search.epochs=3", "trainer.checkpoint_every_steps=1", "hydra/launcher=submitit_local",
            "hydra.launcher.timeout_min=60", "resume=true", "hydra.sweep.dir=sweep"]
    env = {**os.environ, "NASCTL_NB201": str(NB201_TABLE), **ONE_THREAD}
    proc = subprocess.Popen([sys.executable, "-m", "nasctl", "search", "-m", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    run = tmp_path / "sweep/0"
    try:
        deadline = time.time() + 900
        while not ((run / "metrics.jsonl").exists() and epochs(run)) and time.time() < deadline:
            time.sleep(0.1)
        job = [p for p in _descendants(proc.pid) if b"submitit.core._submit" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(job) == 1, "the submitit job process was not found"
        os.kill(job[0], signal.SIGUSR2)
        log, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher, submitit's controller and the job
    assert proc.returncode == 0, log
    job_logs = "".join(p.read_text() for p in (tmp_path / "sweep/.submitit").glob("*/*_log.*"))
    assert "Requeued job" in job_logs
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and "reason" not in manifest  # the requeue's reason is gone
    assert epochs(run) == [0, 1, 2]  # every epoch once: the requeued job continued, it did not restart
