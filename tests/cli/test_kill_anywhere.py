"""A run SIGKILLed at any point resumes and ends bit-identical to an uninterrupted one (CPU).

Each run is a fork of the test process (the real Hydra entry point, without a new interpreter);
the kill is a SIGKILL the run sends itself at an exact point: before its first checkpoint, mid-epoch,
inside a checkpoint write, between the metrics line and the checkpoint after it.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import nasctl.store as store
from nasctl import entry
from nasctl.store import Run
from nasctl.train.trainer import Trainer
from tests.conftest import TINY_RETRAIN, TINY_SEARCH

pytestmark = pytest.mark.slow

SEARCH = [*TINY_SEARCH, "search.epochs=3", "search.steps_per_epoch=4", "trainer.checkpoint_every_steps=2"]
RETRAIN = [*TINY_RETRAIN, "genotype=darts_v2", "retrain.steps_per_epoch=4", "trainer.checkpoint_every_steps=2"]
ARGS = {"search": SEARCH, "retrain": RETRAIN}


def kill_on(owner: Any, attr: str, n: int, after: bool = False, when: Callable[..., bool] = lambda *a: True) -> None:
    """Replace `owner.attr` so that its n-th call (among those `when` accepts) SIGKILLs the process, before or after."""
    real, calls = getattr(owner, attr), [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        hit = when(*args) and (calls.__setitem__(0, calls[0] + 1) or calls[0] == n)
        if hit and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*args, **kwargs)
        if hit and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(owner, attr, wrapper)


def last_pt(*args: Any) -> bool:
    return Path(args[0]).name == "last.pt"


# point name -> (what to patch, which call, after it?, which calls count)
POINTS: dict[str, tuple[Any, str, int, bool, Callable[..., bool]]] = {
    "just_started": (Trainer, "__init__", 1, False, lambda *a: True),  # the manifest exists, nothing else
    "before_first_checkpoint": (Run, "save_checkpoint", 1, False, lambda *a: True),
    "mid_epoch": (Trainer, "begin_step", 7, False, lambda *a: True),
    "checkpoint_moved_to_prev": (store, "atomic_write", 3, False, last_pt),
    "checkpoint_written_not_recorded": (store, "atomic_write", 3, True, last_pt),
    "after_metrics_line": (Run, "log_metrics", 1, True, lambda *a: True),
    "after_metrics_line_no_checkpoint_yet": (Run, "log_metrics", 1, True, lambda *a: True),
}
EXTRA = {"after_metrics_line_no_checkpoint_yet": ["trainer.checkpoint_every_steps=0"]}  # epoch-end checkpoints only


def in_child(stage: str, args: list[str], cwd: Path, kill: str | None = None) -> int:
    """`nasctl STAGE ARGS` in a fork of this process; its exit status, or -9 when it was killed at `kill`."""
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 70
        try:
            os.chdir(cwd)
            if kill:
                kill_on(*POINTS[kill])
            try:
                entry.main(stage, args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def outcome(run: Path) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The final weights and the metrics lines without their timings."""
    weights = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["loop"]["model"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, [{k: v for k, v in r.items() if k != "epoch_time"} for r in lines]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """One uninterrupted run per stage."""
    root = tmp_path_factory.mktemp("reference")
    for stage, args in ARGS.items():
        assert in_child(stage, [*args, f"hydra.run.dir={stage}"], root) == 0
    return {stage: root / stage for stage in ARGS}


# every point for a search; for a retrain (the same trainer and lifecycle) those where it writes its own files
CASES = [*(("search", p) for p in POINTS),
         *(("retrain", p) for p in ("just_started", "before_first_checkpoint", "checkpoint_written_not_recorded",
                                    "after_metrics_line"))]


@pytest.mark.parametrize("stage, point", CASES)
def test_killed_anywhere_resumes_bit_identical(tmp_path, fashion, reference, stage, point):
    assert in_child(stage, [*ARGS[stage], *EXTRA.get(point, [])], tmp_path, kill=point) == -signal.SIGKILL
    (run,) = (m.parent for m in tmp_path.glob(f"runs/{stage}/*/manifest.json"))
    before = json.loads((run / "manifest.json").read_text())
    assert before["status"] == "running"

    resume = "resume=true" if point == "before_first_checkpoint" else f"resume={run}"  # true finds it
    assert in_child(stage, [resume, "trainer=cpu", "trainer.progress=false"], tmp_path) == 0
    after = json.loads((run / "manifest.json").read_text())
    assert after["status"] == "completed" and after["started"] == before["started"]  # same run, same manifest
    assert len(list(tmp_path.glob(f"runs/{stage}/*"))) == 1, "the resume continued in place, not in a new directory"
    (a, a_lines), (b, b_lines) = outcome(reference[stage]), outcome(run)
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    assert b_lines == a_lines
