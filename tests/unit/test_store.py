"""Run store: checksummed atomic checkpoints, fallback to the previous good one, run=latest."""

from __future__ import annotations

import json
import time

import pytest
import torch

from nasctl.errors import NasctlError
from nasctl.store import Run, find_runs, resolve_run


def new_run(path, kind="search") -> Run:
    return Run.create(path, kind, seed=0, overrides=[], config={"seed": 0})


def test_checkpoint_roundtrip_records_sha(tmp_path):
    run = new_run(tmp_path / "r")
    run.save_checkpoint({"x": torch.arange(3)})
    assert len(run.manifest["checkpoints"]["last.pt"]) == 64
    assert torch.equal(run.load_checkpoint()["x"], torch.arange(3))
    assert not list(run.ckpt_dir.glob("*.tmp")), "no temporary file is left behind"


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_damaged_checkpoint_is_refused_and_previous_used(tmp_path, damage):
    run = new_run(tmp_path / "r")
    run.save_checkpoint({"step": 1})
    run.save_checkpoint({"step": 2})
    last = run.ckpt_dir / "last.pt"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[:20])
    else:
        torch.save({"step": 99}, last)
    with pytest.raises(NasctlError, match="last.pt.*SHA-256"):
        run.load_checkpoint()
    assert run.load_latest_good()["step"] == 1


def test_no_good_checkpoint_is_an_error(tmp_path):
    run = new_run(tmp_path / "r")
    run.save_checkpoint({"step": 1})
    (run.ckpt_dir / "last.pt").write_bytes(b"garbage")
    with pytest.raises(NasctlError, match="refusing"):
        run.load_latest_good()


def test_latest_is_the_most_recently_started_run_of_its_kind(tmp_path):
    a = new_run(tmp_path / "search" / "b-first")
    time.sleep(0.01)
    b = new_run(tmp_path / "search" / "multirun" / "x" / "0")
    new_run(tmp_path / "retrain" / "z", kind="retrain")
    assert [r.path for r in find_runs(tmp_path, "search")] == [a.path, b.path]
    assert resolve_run("latest", tmp_path, "search").path == b.path


def test_resolve_run_errors(tmp_path):
    with pytest.raises(NasctlError, match="no search run"):
        resolve_run("latest", tmp_path, "search")
    with pytest.raises(NasctlError, match="not a nasctl run"):
        resolve_run(str(tmp_path / "nothing"), tmp_path, "search")
    r = new_run(tmp_path / "retrain" / "x", kind="retrain")
    with pytest.raises(NasctlError, match="is a retrain run"):
        resolve_run(str(r.path), tmp_path, "search")


def test_truncate_metrics_keeps_earlier_epochs(tmp_path):
    run = new_run(tmp_path / "r")
    for e in range(3):
        run.log_metrics({"epoch": e})
    run.truncate_metrics(2)
    assert [r["epoch"] for r in run.metrics()] == [0, 1]
    assert json.loads((run.path / "manifest.json").read_text())["status"] == "running"


class Crash(BaseException):
    """Stands for a SIGKILL: nothing after it runs."""


def crash_at(monkeypatch, point: str) -> None:
    """Make the next checkpoint save stop at `point`: rotated, written (not yet recorded)."""
    import nasctl.store as store

    real_write = store.atomic_write

    def write(path, data):
        if path.name == "last.pt" and point == "rotated":
            raise Crash
        real_write(path, data)
        if path.name == "last.pt" and point == "written":
            raise Crash

    monkeypatch.setattr(store, "atomic_write", write)


@pytest.mark.parametrize("point", ["rotated", "written"])
def test_a_save_killed_anywhere_leaves_a_checkpoint_that_loads(tmp_path, monkeypatch, point):
    run = new_run(tmp_path / "r")
    run.save_checkpoint({"step": 1})
    run.save_checkpoint({"step": 2})
    with monkeypatch.context() as m:
        crash_at(m, point)
        with pytest.raises(Crash):
            run.save_checkpoint({"step": 3})
    resumed = Run(run.path)  # a new process
    expected = {"rotated": 2, "written": 3}[point]  # the old last.pt (now prev.pt), or the new one (pending)
    assert resumed.load_latest_good()["step"] == expected
    with monkeypatch.context() as m:  # killed again during the first save after the resume
        crash_at(m, point)
        with pytest.raises(Crash):
            resumed.save_checkpoint({"step": 3})
    again = Run(run.path)
    assert again.load_latest_good()["step"] == expected
    again.save_checkpoint({"step": 3})
    again.save_checkpoint({"step": 4})
    assert Run(run.path).load_latest_good()["step"] == 4
    (run.ckpt_dir / "last.pt").write_bytes(b"garbage")
    assert Run(run.path).load_latest_good()["step"] == 3  # prev.pt is the good step 3, not garbage


def test_no_checkpoint_yet_means_start_over(tmp_path, monkeypatch):
    run = new_run(tmp_path / "r")
    assert run.load_latest_good() is None
    with monkeypatch.context() as m:  # killed writing the very first checkpoint: still none recorded
        crash_at(m, "written")
        with pytest.raises(Crash):
            run.save_checkpoint({"step": 1})
    assert Run(run.path).load_latest_good() is None
    Run(run.path).save_checkpoint({"step": 1})
    assert Run(run.path).load_latest_good()["step"] == 1


def test_a_metrics_line_cut_by_a_kill_is_dropped(tmp_path):
    run = new_run(tmp_path / "r")
    run.log_metrics({"epoch": 0})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "train_lo')
    assert run.metrics() == [{"epoch": 0}]
    run.truncate_metrics(1)
    run.log_metrics({"epoch": 1})
    assert [r["epoch"] for r in run.metrics()] == [0, 1]


def test_any_checkpoint_killed_after_its_write_loads(tmp_path, monkeypatch):
    run = new_run(tmp_path / "r")
    run.save_checkpoint({"acc": 1}, "best.pt")
    import nasctl.store as store

    real_write = store.atomic_write

    def write(path, data):
        real_write(path, data)
        if path.name == "best.pt":
            raise Crash

    with monkeypatch.context() as m:
        m.setattr(store, "atomic_write", write)
        with pytest.raises(Crash):
            run.save_checkpoint({"acc": 2}, "best.pt")
    assert Run(run.path).load_checkpoint("best.pt")["acc"] == 2  # the new file's SHA-256 was pending
