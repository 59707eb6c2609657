"""DDP on CPU (gloo): sharded global batches equal one process's training; `torchrun -m nasctl retrain`."""

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
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from nasctl.data import DeviceBatches, ImageSplit
from nasctl.train import distributed
from tests.conftest import TINY_RETRAIN, nasctl

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY_DDP = [*TINY_RETRAIN, "genotype=darts_v2", "retrain.eval_batches=1"]


def train_linear(steps: int = 3) -> torch.nn.Module:
    """A few SGD steps of a linear classifier on seeded batches of 8 random 1x4x4 images."""
    g = torch.Generator().manual_seed(0)
    split = ImageSplit(torch.randint(0, 256, (32, 1, 4, 4), dtype=torch.uint8, generator=g),
                       torch.randint(0, 3, (32,), generator=g))
    batches = distributed.shard(DeviceBatches(split, torch.device("cpu"), 8, mean=[0.5], std=[0.25], augment=None,
                                              shuffle=True, drop_last=True, seed=0))
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 3)
    net, opt = distributed.parallel(model), torch.optim.SGD(model.parameters(), lr=0.5)
    for x, y in list(batches.epoch(0))[:steps]:
        opt.zero_grad()
        F.cross_entropy(net(x.flatten(1)), y).backward()
        opt.step()
    return model


def _rank(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.save(train_linear().state_dict(), Path(out) / f"rank{rank}.pt")
        distributed.teardown()  # a barrier first: a rank that left early aborted the other now and then (SIGABRT)
    finally:
        distributed.teardown(clean=False)


@pytest.mark.slow
def test_two_gloo_ranks_train_exactly_like_one_process_on_the_global_batch(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    single = train_linear().state_dict()  # no process group: the whole batch of 8 in one process
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for k, v in single.items():
        assert torch.equal(ranks[0][k], ranks[1][k])  # the replicas stay identical
        torch.testing.assert_close(ranks[0][k], v)  # mean of the shards' gradients = the full batch's


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, **ONE_THREAD}
    env.pop("HYDRA_FULL_ERROR", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "nasctl", "retrain", *args]
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    try:
        return proc.communicate(timeout=timeout)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_torchrun_retrain_one_run_dir_written_by_rank0(tmp_path: Path, fashion: Path) -> None:
    proc = torchrun(*TINY_DDP, "retrain.epochs=2", cwd=tmp_path)
    log = finish(proc)
    assert proc.returncode == 0, log
    (run,) = (tmp_path / "runs/retrain").iterdir()  # both ranks used rank 0's directory
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["processes"] == 2
    assert epochs(run) == [0, 1]
    assert len(list(run.glob("events.out.tfevents.*"))) == 1  # TensorBoard from rank 0 only
    assert (run / "checkpoints/best.pt").is_file()


@pytest.mark.slow
def test_torchrun_sigterm_stops_all_ranks_and_resume_continues(tmp_path: Path, fashion: Path) -> None:
    proc = torchrun(*TINY_DDP, "retrain.epochs=4", "retrain.steps_per_epoch=4", cwd=tmp_path)
    deadline = time.time() + 600
    while not list(tmp_path.glob("runs/retrain/*/metrics.jsonl")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)  # torchrun forwards it to both ranks
    log = finish(proc)
    (run,) = (tmp_path / "runs/retrain").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted", log
    proc = torchrun(*TINY_DDP, "retrain.epochs=4", "retrain.steps_per_epoch=4", f"resume={run}", cwd=tmp_path)
    log = finish(proc)
    assert proc.returncode == 0, log
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    assert epochs(run) == [0, 1, 2, 3]


def test_search_refuses_torchrun(tmp_path: Path) -> None:
    out = nasctl("search", cwd=tmp_path, env={"WORLD_SIZE": "2", "RANK": "0"})
    assert out.returncode == 2 and "only retrain runs under torchrun" in out.stderr
