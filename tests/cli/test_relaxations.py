"""Every relaxation through the CLI: a real tiny search per space, derive, report, kill/resume, refusals, a sweep."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from nasctl import conf_dir as nasctl_conf
from tests.conftest import TINY_ANY_SPACE, TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow
NB201 = TINY_ANY_SPACE + ["space=nb201", "space.N=1"]
DARTS = [*TINY_SEARCH, "space.layers=3"]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("relaxation", ["pc_darts", "gdas", "drnas"])
@pytest.mark.parametrize("space", ["nb201", "darts"])
def test_tiny_search_derive_and_report(tmp_path, fashion, nb201_table, relaxation, space):
    hessian = [] if relaxation == "gdas" or space == "darts" else ["diagnostics.hessian_every=1"]
    fused = ["trainer.fused_optimizer=true"] if relaxation == "gdas" else []  # fused SGD with unreached weights
    args = [*(NB201 if space == "nb201" else DARTS), f"relaxation={relaxation}", *hessian, *fused, "hydra.run.dir=run"]
    out = nasctl("search", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    cells = ["cell"] if space == "nb201" else ["normal", "reduce"]
    with np.load(run / "alphas.npz") as z:
        keys = set(z.files)
        shapes = {k: z[k].shape for k in z.files}
    extra = {f"beta_{c}" for c in cells} if relaxation == "pc_darts" else set()
    assert keys == set(cells) | extra and all(s[0] == 2 for s in shapes.values())  # one row per epoch
    lines = metrics(run)
    if relaxation == "gdas":
        assert [m["gdas_tau"] for m in lines] == [10.0, 0.1]
    if space == "nb201":
        assert all(isinstance(m["bench_cifar10"], float) for m in lines)
        assert all(isinstance(m.get("hessian_eig"), float) for m in lines) == bool(hessian)
    derived = nasctl("derive", "run=run", cwd=tmp_path)
    assert derived.returncode == 0, derived.stderr
    assert lines[-1]["genotype"] in derived.stdout.replace("\n", "")
    report = nasctl("report", "dir=run", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert len(list((run / "report" / "alphas").glob("*.png"))) == len(cells)


def test_pc_darts_search_keeps_alpha_and_beta_frozen_during_warmup(tmp_path, fashion, nb201_table):
    history = []
    for lr in (3e-4, 0.1):  # with no architecture step in epoch 0, its lr cannot matter there
        args = [*NB201, "relaxation=pc_darts", "relaxation.warmup=0.5", f"search.arch_lr={lr}", f"hydra.run.dir={lr}"]
        out = nasctl("search", *args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        with np.load(tmp_path / str(lr) / "alphas.npz") as z:
            history.append({k: z[k] for k in z.files})
    slow, fast = history
    assert all(np.array_equal(slow[k][0], fast[k][0]) for k in ("cell", "beta_cell"))  # epoch 0: frozen
    assert all(not np.array_equal(slow[k][1], fast[k][1]) for k in ("cell", "beta_cell"))  # epoch 1: both learn


def launch(args: list[str], cwd: Path, run: str) -> tuple[subprocess.Popen, Callable[[Callable[[], bool]], None]]:
    """Start a search to kill; `wait(cond)` polls until cond() holds while it runs (at most 300 s)."""
    proc = subprocess.Popen([sys.executable, "-m", "nasctl", "search", *args, f"hydra.run.dir={run}"], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    end = time.time() + 300

    def wait(cond: Callable[[], bool]) -> None:
        while not cond():
            assert proc.poll() is None and time.time() < end, proc.communicate()
            time.sleep(0.02)

    return proc, wait


@pytest.mark.parametrize(("relaxation", "space"), [("gdas", NB201), ("drnas", NB201), ("pc_darts", DARTS)])
def test_sigkill_then_resume_is_bit_identical(tmp_path, fashion, nb201_table, relaxation, space):
    args = [*space, f"relaxation={relaxation}", "search.epochs=3", "search.steps_per_epoch=6",
            "trainer.checkpoint_every_steps=2"]
    ref = nasctl("search", *args, "hydra.run.dir=ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    killed = tmp_path / "killed"
    proc, wait = launch(args, tmp_path, "killed")

    def checkpoints() -> dict:
        try:
            return json.loads((killed / "manifest.json").read_text()).get("checkpoints", {})
        except (OSError, json.JSONDecodeError):
            return {}

    wait(lambda: (killed / "metrics.jsonl").exists())  # epoch 0 done
    after_epoch = checkpoints().get("last.pt")
    wait(lambda: checkpoints().get("last.pt") not in (None, after_epoch))  # a mid-epoch checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = nasctl("search", "resume=killed", "trainer=cpu", "trainer.progress=false", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)["loop"]["model"]
            for d in ("ref", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [m["train_loss"] for m in metrics(killed)] == [m["train_loss"] for m in metrics(tmp_path / "ref")]
    with np.load(tmp_path / "ref" / "alphas.npz") as za, np.load(killed / "alphas.npz") as zb:
        assert za.files == zb.files and all(np.array_equal(za[k], zb[k]) for k in za.files)


@pytest.mark.parametrize("setting", ["stabilizer=sdarts_rs", "stabilizer=amended", "search.order=second",
                                     "diagnostics.hessian_every=1", "stabilizer=darts_es"])
def test_gdas_refuses_meaningless_combinations_before_any_work(tmp_path, nb201_table, setting):
    out = nasctl("search", *NB201, "relaxation=gdas", setting, cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    err = " ".join(out.stderr.split())
    assert f"relaxation=gdas cannot be combined with {setting}" in err and "Traceback" not in err
    assert "docs/methods.md" in err
    assert not list(tmp_path.glob("runs/**/manifest.json"))  # refused before a run was created


def test_sweep_over_relaxations_and_stabilizers(tmp_path, fashion, nb201_table):
    out = nasctl("search", "-m", *NB201, "search.epochs=1", "relaxation=darts,pc_darts,gdas,drnas",
                 "stabilizer=none,sdarts_rs", "hydra.sweep.dir=sweep", cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 1  # the one refused job (gdas x sdarts_rs) fails; the other seven run
    assert "relaxation=gdas cannot be combined with stabilizer=sdarts_rs" in " ".join(out.stderr.split())
    runs = [json.loads(m.read_text()) for m in (tmp_path / "sweep").glob("*/manifest.json")]
    done = sorted(tuple(sorted(o for o in r["overrides"] if o.startswith(("relaxation=", "stabilizer="))))
                  for r in runs if r["status"] == "completed")
    assert len(done) == 7 and ("relaxation=gdas", "stabilizer=sdarts_rs") not in done
    report = nasctl("report", "dir=sweep", "plots=false", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    with (tmp_path / "sweep" / "report" / "summary.csv").open() as f:
        methods = {row["method"] for row in csv.DictReader(f)}
    assert {"none", "sdarts_rs", "pc_darts+none", "pc_darts+sdarts_rs", "gdas+none", "drnas+none",
            "drnas+sdarts_rs"} <= methods  # one group per relaxation and stabilizer, never mixed


PROGRESSIVE = [*TINY_SEARCH, "space=darts_nonone", "space.C=8", "space.layers=3", "relaxation=drnas"]


def stages(epochs: str) -> str:
    return f"relaxation.progressive={{k:[4,2],ops:[7,4],epochs:{epochs},warmup:0.5}}"


def test_drnas_progressive_search_derives_a_cell_of_kept_ops(tmp_path, fashion):
    out = nasctl("search", *PROGRESSIVE, stages("[0.5,0.5]"), "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "run"
    genotype = json.loads((run / "genotype.json").read_text())
    ops = list(OmegaConf.load(Path(nasctl_conf()) / "space" / "darts_nonone.yaml").ops)
    with np.load(run / "alphas.npz") as z:
        assert (z["keep_normal"][0] == 1).all() and (z["keep_normal"][-1].sum(-1) == 4).all()  # pruned at epoch 1
        for cell in ("normal", "reduce"):
            keep = z[f"keep_{cell}"][-1]
            for i, (op, j) in enumerate(genotype[cell]):
                row = sum(2 + t for t in range(i // 2)) + j
                assert keep[row, ops.index(op)] == 1
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=False)["loop"]
    assert ckpt["stage"] == 1
    dw = next(v for k, v in ckpt["model"].items() if k.endswith("edges.0.ops.3.0.1.weight"))  # sep_conv's depthwise
    assert dw.shape[0] == 4  # widened from 8/4 to 8/2 channels


def test_drnas_progressive_sigkill_in_the_widened_stage_resumes_bit_identical(tmp_path, fashion):
    args = [*PROGRESSIVE, stages("[0.34,0.66]"), "search.epochs=3", "search.steps_per_epoch=6",
            "trainer.checkpoint_every_steps=2"]
    ref = nasctl("search", *args, "hydra.run.dir=ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    killed = tmp_path / "killed"
    proc, wait = launch(args, tmp_path, "killed")
    state: dict = {}

    def in_widened_stage() -> bool:  # a checkpoint inside epoch 1, the first of the widened stage
        try:
            state.update(torch.load(killed / "checkpoints" / "last.pt", weights_only=False))
        except Exception:  # noqa: BLE001  (not there yet, or being written)
            return False
        return state["epoch"] == 1 and state["step"] > 0

    wait(in_widened_stage)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state["loop"]["stage"] == 1
    resumed = nasctl("search", "resume=killed", "trainer=cpu", "trainer.progress=false", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    a, b = (torch.load(tmp_path / d / "checkpoints" / "last.pt", weights_only=False)["loop"] for d in ("ref", "killed"))
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [m["train_loss"] for m in metrics(killed)] == [m["train_loss"] for m in metrics(tmp_path / "ref")]
