"""DARTS-PT selection: the decisions on hand-built supernets and scores, the plan, then real tiny derives."""

from __future__ import annotations

import math
import signal
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

import nasctl
from nasctl import genotype as G
from nasctl.selection.darts_pt import Projector, choose_inputs, choose_op, masked_accuracy, plan
from nasctl.spaces import space_config
from nasctl.spaces.base import MixedOp, Supernet
from tests.cli.test_resume import wait_for
from tests.conftest import TINY_ANY_SPACE, TINY_SEARCH
from tests.conftest import nasctl as nasctl_cli


class Scale(nn.Module):
    def __init__(self, factor: float, bias: float = 0.0) -> None:
        super().__init__()
        self.factor, self.bias = factor, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x + self.bias


TOY_OPS = {"pass": lambda C, s, a: Scale(1.0), "flip": lambda C, s, a: Scale(-1.0), "const": lambda C, s, a: Scale(0.0, 0.1)}


class Toy(Supernet):
    """One edge mixing pass(x) = x, flip(x) = -x and const(x) = 0.1; logits (out, -out); the label is x < 0."""

    def __init__(self) -> None:
        super().__init__({"cell": [list(TOY_OPS)]})
        self.edge = MixedOp(list(TOY_OPS), 1, 1, TOY_OPS)
        with torch.no_grad():
            self.alphas["cell"].copy_(torch.tensor([[0.0, 0.0, 0.5]]))  # argmax would keep `const`

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.edge(x, self.edge_mix()["cell"][0]).flatten(1)
        return torch.cat([out, -out], 1)


def toy_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.tensor([1.0, -1.0, 1.0, -1.0]).view(-1, 1, 1, 1)
    return [(x, (x.flatten() < 0).long())]


def test_darts_pt_picks_the_op_whose_removal_breaks_the_supernet() -> None:
    # the mixture predicts class 0 everywhere (50 %): without `pass` it predicts the wrong class (0 %), without
    # `flip` the right one (100 %), without `const` a tie that argmax resolves to class 0 (50 %)
    model = Toy()
    base = {"cell": model.mixing()["cell"].detach()}
    score = lambda w: masked_accuracy(model, toy_batches(), w, torch.no_grad)
    assert score(base) == 50.0
    best, accs = choose_op(score, base, "cell", 0, [0, 1, 2])
    assert accs == {0: 0.0, 1: 100.0, 2: 50.0}
    assert list(TOY_OPS)[best] == "pass" and int(model.alphas["cell"].argmax()) == 2  # PT differs from argmax
    assert torch.equal(model.mixing()["cell"], base["cell"])  # the masked weights were used only inside the evaluation


def test_op_ties_go_to_the_first_candidate() -> None:
    best, _ = choose_op(lambda w: 10.0, {"c": torch.ones(1, 3)}, "c", 0, [1, 2])
    assert best == 1


def test_topology_drops_the_least_needed_edges_one_trial_at_a_time() -> None:
    # accuracy = 50 + the sum of the kept rows' worth; a zeroed row counts 0. Each trial zeroes one row of the
    # *base* weights (rows dropped earlier in the loop are back in), as PT does.
    worth = torch.tensor([5.0, 1.0, 3.0, 1.0])
    seen = []

    def score(w):
        alive = w["c"].sum(1) > 0
        seen.append(alive.tolist())
        return 50.0 + float(worth[alive].sum())

    kept, dropped = choose_inputs(score, {"c": torch.ones(4, 2)}, "c", [0, 1, 2, 3], 2)
    assert kept == [0, 2]
    assert [r for r, _ in dropped] == [3, 1]  # rows 1 and 3 tie: the later one goes first
    assert all(sum(not a for a in alive) == 1 for alive in seen)  # never two rows zeroed in one trial


def test_projector_fixes_decided_rows_and_keeps_gradient_on_the_others() -> None:
    alpha = torch.zeros(3, 4, requires_grad=True)
    p = Projector()
    p.ops["c"], p.dropped["c"] = {0: 2}, [1]
    w = p({"c": torch.softmax(alpha, -1)})["c"]
    assert torch.equal(w[0], torch.tensor([0.0, 0.0, 1.0, 0.0])) and torch.equal(w[1], torch.zeros(4))
    assert torch.allclose(w[2], torch.full((4,), 0.25))
    (w * torch.arange(12.0).view(3, 4)).sum().backward()
    assert alpha.grad[:2].abs().sum() == 0 and alpha.grad[2].abs().sum() > 0


@pytest.mark.parametrize("name, rounds", [("darts", 14 * [["op"] * 2] + 3 * [["node"] * 2]), ("nb201", 6 * [["op"]])])
def test_plan_is_one_edge_per_cell_type_per_round_then_the_nodes(name: str, rounds: list) -> None:
    space, scfg = space_config(OmegaConf.load(nasctl.conf_dir() / "space" / f"{name}.yaml"))
    rows = {c: sum(len(n) for n in nodes) for c, nodes in space.node_edges(scfg).items()}
    assert [[s.kind for s in r] for r in plan(space, scfg, rows)] == rounds


# -- real tiny derives -------------------------------------------------------------------------------
NB201 = TINY_ANY_SPACE + ["space=nb201", "space.N=1", "paths.nb201=null"]


def search(tmp_path, name: str, *args: str):
    out = nasctl_cli("search", *args, f"hydra.run.dir={name}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return tmp_path / name


@pytest.mark.slow
def test_darts_space_derive_without_fine_tuning(tmp_path, fashion) -> None:
    run = search(tmp_path, "d", *TINY_SEARCH)
    out = nasctl_cli("derive", "run=d", "selection=darts_pt", "selection.tune_epochs=0", "selection.eval_batches=1",
                     cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    pt, argmax = G.load(run / "genotype_darts_pt.json"), G.load(run / "genotype.json")
    assert isinstance(pt, G.CellGenotype) and isinstance(argmax, G.CellGenotype)  # both written, side by side
    assert out.stdout.count("decision round") == 2 * 14 + 2 * 3 and "fine-tuning" not in out.stdout
    ops = {line.split("-> ")[1].split(" (")[0] for line in out.stdout.splitlines() if "-> " in line}
    assert "none" not in ops and {op for op, _ in pt.normal + pt.reduce} <= ops


@pytest.mark.slow
def test_nb201_derive_with_fine_tuning_resumes_after_a_kill(tmp_path, fashion) -> None:
    run = search(tmp_path, "n", *NB201)
    args = ["derive", "run=n", "selection=darts_pt", "selection.tune_epochs=2", "selection.eval_batches=2",
            "paths.nb201=null"]
    ref = nasctl_cli(*args, cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr
    assert ref.stdout.count("fine-tuning epoch") == 2 * 5 and ref.stdout.count("decision round") == 6
    # PT restarts the weight SGD at lr/10 = 0.0025 and anneals it (cosine) to lr_min = 0.001 over the 10 epochs
    lrs = [float(line.split("lr=")[1]) for line in ref.stdout.splitlines() if "fine-tuning epoch" in line]
    assert lrs == pytest.approx([0.001 + 0.0015 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(10)], rel=1e-4)
    reference = (run / "genotype_darts_pt.json").read_text()
    state = torch.load(run / "checkpoints" / "darts_pt.pt", weights_only=False)
    assert sorted(r["edge"] for r in state["log"]) == list(range(6))  # every edge decided once
    assert G.load(run / "genotype_darts_pt.json").ops == [r["op"] for r in sorted(state["log"], key=lambda r: r["edge"])]
    # a checkpoint whose SHA-256 the manifest does not hold (a kill inside its save): the selection starts over
    (run / "checkpoints" / "darts_pt.pt").write_bytes(b"cut short")
    (run / "genotype_darts_pt.json").unlink()
    again = nasctl_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "starting over" in again.stdout, again.stderr
    assert (run / "genotype_darts_pt.json").read_text() == reference
    (run / "checkpoints" / "darts_pt.pt").unlink()
    (run / "genotype_darts_pt.json").unlink()

    proc = subprocess.Popen([sys.executable, "-m", "nasctl", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    ckpt = run / "checkpoints" / "darts_pt.pt"
    wait_for(lambda: ckpt.exists() and torch.load(ckpt, weights_only=False)["tuned"] >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "genotype_darts_pt.json").exists()
    resumed = nasctl_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert (run / "genotype_darts_pt.json").read_text() == reference
    assert torch.load(ckpt, weights_only=False)["log"] == state["log"]  # the same decisions, the same accuracies


@pytest.mark.slow
@pytest.mark.parametrize("relaxation", ["pc_darts", "drnas", "gdas"])
def test_any_relaxation_that_mixes_all_ops_and_gdas_refused(tmp_path, fashion, relaxation: str) -> None:
    run = search(tmp_path, "r", *NB201, f"relaxation={relaxation}")
    out = nasctl_cli("derive", "run=r", "selection=darts_pt", "selection.tune_epochs=1", "selection.eval_batches=1",
                     "paths.nb201=null", cwd=tmp_path)
    if relaxation == "gdas":
        assert out.returncode == 2 and "relaxation=gdas" in out.stderr and "selection=argmax" in out.stderr
        assert not (run / "genotype_darts_pt.json").exists() and "Traceback" not in out.stderr
    else:
        assert out.returncode == 0, out.stderr
        assert isinstance(G.load(run / "genotype_darts_pt.json"), G.ArchString)
