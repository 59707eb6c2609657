"""DARTS-PT (Wang et al., ICLR 2021): perturbation-based selection on the trained supernet of a search.

Follows `ruocwang/darts-pt` sota/cnn/projection.py:15-246 (DARTS space) and nasbench201/projection.py:16-137.
One decision per edge, in a random order, normal cell before reduction cell: mask each candidate op of
the edge in turn (its weight set to 0, no renormalisation), measure the supernet's validation accuracy,
and fix the edge to the op whose removal hurts most (one-hot). Where a genotype keeps k inputs per node
(DARTS: 2), each node with more inputs then drops, one at a time, the edge whose removal leaves the
highest accuracy. Between decisions the supernet is fine-tuned (architecture and weight steps) with the
decided edges fixed. The genotype is the space's derive rule on the projected weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Optional

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nasctl import genotype as G
from nasctl.config import validate
from nasctl.errors import NasctlError
from nasctl.relaxations import build_relaxation
from nasctl.search.stage import SearchLoop, cycle_batches
from nasctl.selection.base import SELECTIONS, Selection
from nasctl.spaces import Space, Supernet
from nasctl.store import Run
from nasctl.train import Trainer, seed_everything
from nasctl.train.lifecycle import cosine_lr
from nasctl.train.trainer import rng_state, set_rng_state

CHECKPOINT = "darts_pt.pt"  # in the search run's checkpoints/, beside last.pt


@dataclass
class DartsPTConfig:
    name: str = MISSING
    tune_epochs: int = MISSING  # epochs of fine-tuning between two decisions (PT's --proj_intv); 0 = none
    lr_factor: float = MISSING  # fine-tuning lr = search.w_lr * lr_factor (PT: learning_rate / 10)
    lr_schedule: str = MISSING  # cosine (to search.w_lr_min over the fine-tuning) | constant
    eval_batches: Optional[int] = MISSING  # validation batches per candidate evaluation; null = the whole val half
    seed: Optional[int] = MISSING  # the random edge and node order; null = the search run's seed

    def __post_init__(self) -> None:
        if self.tune_epochs < 0 or self.lr_factor <= 0 or self.lr_schedule not in ("cosine", "constant") or (
            self.eval_batches is not None and self.eval_batches < 1
        ):
            raise NasctlError(
                "selection=darts_pt needs tune_epochs >= 0, lr_factor > 0, lr_schedule cosine or constant and "
                f"eval_batches >= 1 (or null), got {self.tune_epochs}, {self.lr_factor}, {self.lr_schedule!r} "
                f"and {self.eval_batches}."
            )


class Projector:
    """The decisions so far; as a mixing projection it fixes decided edges to one-hot rows and dropped ones to 0."""

    def __init__(self) -> None:
        self.ops: dict[str, dict[int, int]] = {}  # cell type -> alpha row -> chosen op
        self.dropped: dict[str, list[int]] = {}  # cell type -> rows removed by the topology step
        self.nodes: dict[str, list[int]] = {}  # cell type -> nodes whose inputs are decided

    def __call__(self, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.project(k, w) for k, w in weights.items()}

    def project(self, cell: str, w: torch.Tensor) -> torch.Tensor:
        keep, fixed = torch.ones_like(w[:, :1]), torch.zeros_like(w)
        for row, op in self.ops.get(cell, {}).items():
            keep[row], fixed[row, op] = 0, 1
        for row in self.dropped.get(cell, []):
            keep[row], fixed[row] = 0, 0
        return w * keep + fixed

    def state_dict(self) -> dict[str, Any]:
        return {"ops": self.ops, "dropped": self.dropped, "nodes": self.nodes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ops, self.dropped, self.nodes = state["ops"], state["dropped"], state["nodes"]


class TuneLoop(SearchLoop):
    """The search's own loop, continued for fine-tuning: only the weight lr schedule is DARTS-PT's."""

    def tuning(self, cfg: DartsPTConfig, total_epochs: int) -> None:
        s = self.cfg.search
        self.tune_lr, self.tune_lr_min, self.tune_total = s.w_lr * cfg.lr_factor, s.w_lr_min, max(total_epochs, 1)
        self.tune_schedule = cfg.lr_schedule

    def lr(self, epoch: int) -> float:
        """Epoch `epoch` (numbered on after the search's): PT's SGD restarted at lr/10, cosine to lr_min (or constant)."""
        if self.tune_schedule == "constant":
            return self.tune_lr
        return cosine_lr(epoch - self.hp.epochs, self.tune_total, self.tune_lr, self.tune_lr_min)


@dataclass(frozen=True)
class Step:
    """One decision: an edge's op (`op`) or a node's inputs (`node`), in one cell type."""

    kind: str
    cell: str


def plan(space: Space, scfg: Any, alpha_rows: dict[str, int]) -> list[list[Step]]:
    """The rounds of decisions: one edge per cell type per round, then (k inputs per node) one node per round."""
    cells = list(alpha_rows)
    rounds = [[Step("op", c) for c in cells if r < alpha_rows[c]] for r in range(max(alpha_rows.values()))]
    k = space.genotype.inputs_per_node
    if k is not None:
        wide = {c: [n for n, rows in enumerate(space.node_edges(scfg)[c]) if len(rows) > k] for c in cells}
        rounds += [[Step("node", c) for c in cells if r < len(wide[c])] for r in range(max(map(len, wide.values())))]
    return rounds


Weights = dict[str, torch.Tensor]  # per cell type, (edges, ops) mixing weights
Score = Callable[[Weights], float]  # the supernet's validation accuracy (%) when it mixes with these weights


@torch.no_grad()
def masked_accuracy(model: Supernet, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], weights: Weights,
                    autocast: Callable[[], contextlib.AbstractContextManager]) -> float:
    """Accuracy (%) of `model` mixing with exactly `weights`, in train mode (BN batch statistics) as PT evaluates."""
    model.train()
    correct = count = 0
    with model.mixing_projection(lambda _: weights):
        for x, y in batches:
            with autocast():
                logits = model(x).float()
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
    return 100.0 * correct / count


def without(base: Weights, cell: str, row: int, op: int | None = None) -> Weights:
    """`base` with one op weight (or, op=None, a whole edge) of one cell type set to 0, not renormalised."""
    masked = {k: w.clone() for k, w in base.items()}
    if op is None:
        masked[cell][row] = 0
    else:
        masked[cell][row, op] = 0
    return masked


def choose_op(score: Score, base: Weights, cell: str, edge: int, candidates: list[int]) -> tuple[int, dict[int, float]]:
    """The candidate whose removal from the edge leaves the lowest accuracy (the first of ties; PT projection.py:37-53)."""
    accs = {o: score(without(base, cell, edge, o)) for o in candidates}
    return min(accs, key=lambda o: accs[o]), accs


def choose_inputs(score: Score, base: Weights, cell: str, rows: list[int], k: int) -> tuple[list[int], list[tuple]]:
    """Drop, one at a time, the edge whose removal leaves the highest accuracy (the later of ties) until k are left.

    Each trial zeroes one edge of `base` only: edges dropped earlier in the loop are back in (PT projection.py:83-100).
    """
    rows, dropped = list(rows), []
    while len(rows) > k:
        accs = [(score(without(base, cell, r)), i) for i, r in enumerate(rows)]
        acc, i = max(accs)  # the largest accuracy, then the largest position: ties go to the later edge
        dropped.append((rows.pop(i), acc))
    return rows, dropped


class DartsPT:
    """The selection of one search run: supernet, data, decisions, fine-tuning, checkpoint and progress."""

    def __init__(self, run: Run, space: Space, scfg: Any, cfg: DartsPTConfig, console: Console) -> None:
        self.run, self.space, self.scfg, self.cfg, self.console = run, space, scfg, cfg, console
        search_cfg: DictConfig = run.config
        seed_everything(search_cfg.seed)
        self.trainer = Trainer(search_cfg.trainer, run)
        self.loop = TuneLoop(search_cfg, self.trainer, run)
        self.model = self.loop.model
        trained = run.load_latest_good(self.trainer.device)
        if trained is None:
            raise NasctlError(f"{run.path} has no checkpoint yet (killed before its first one); finish it first: "
                              f"nasctl search resume={run.path}")
        self.loop.load_state_dict(trained["loop"])  # the trained supernet
        self.k = space.genotype.inputs_per_node
        self.rows = {c: a.shape[0] for c, a in self.model.alphas.items()}
        self.rounds = plan(space, scfg, self.rows)
        self.loop.tuning(cfg, cfg.tune_epochs * (len(self.rounds) - 1))
        self.projector = Projector()
        self.generator = torch.Generator().manual_seed(search_cfg.seed if cfg.seed is None else cfg.seed)
        self.done, self.tuned, self.log = 0, 0, []  # rounds decided, fine-tuning epochs run, decision records

    # -- evaluation ------------------------------------------------------------------------------
    def weights(self) -> Weights:
        """The supernet's current projected mixing weights (detached)."""
        with torch.no_grad(), self.model.relaxation.deterministic():  # DrNAS: the Dirichlet mean, not a draw
            return {k: w.detach().clone() for k, w in self.projector(self.model.mixing()).items()}

    def accuracy(self, weights: Weights) -> float:
        self.bar.advance(self.task)
        batches = islice(self.loop.eval_batches.epoch(0), self.cfg.eval_batches)
        return masked_accuracy(self.model, batches, weights, self.trainer.autocast)

    def draw(self, items: list[int]) -> int:
        return items[int(torch.randint(len(items), (1,), generator=self.generator))]

    def decide_op(self, cell: str) -> dict[str, Any]:
        """Fix one random undecided edge to the op whose removal lowers the accuracy most."""
        edge = self.draw([r for r in range(self.rows[cell]) if r not in self.projector.ops.setdefault(cell, {})])
        best, accs = choose_op(self.accuracy, self.weights(), cell, edge, self.candidates(cell, edge))
        self.projector.ops[cell][edge] = best
        names = self.model.edge_ops[cell][edge]
        return {"kind": "op", "cell": cell, "edge": edge, "op": names[best],
                "val_acc_without": {names[o]: a for o, a in accs.items()}}

    def decide_node(self, cell: str) -> dict[str, Any]:
        """Keep k inputs of a random undecided node with more."""
        nodes, done = self.space.node_edges(self.scfg)[cell], self.projector.nodes.setdefault(cell, [])
        node = self.draw([n for n, rows in enumerate(nodes) if len(rows) > self.k and n not in done])
        kept, dropped = choose_inputs(self.accuracy, self.weights(), cell, nodes[node], self.k)
        self.projector.dropped.setdefault(cell, []).extend(r for r, _ in dropped)
        done.append(node)
        return {"kind": "node", "cell": cell, "node": node, "kept_edges": kept,
                "dropped": [{"edge": r, "val_acc_without": a} for r, a in dropped]}

    # -- fine-tuning -----------------------------------------------------------------------------
    def tune_epoch(self) -> float:
        """One epoch of the search's own step (architecture, then weights) with the decided edges fixed."""
        loop, s = self.loop, self.loop.cfg.search
        last = s.epochs - 1  # relaxation and stabilizer schedules and drop-path stay where the search ended
        loop.relaxation.on_epoch_start(last, s.epochs)
        loop.epoch_scalars = loop.hooks.on_epoch_start(self.model, last, s.epochs)
        self.model.set_drop_path(s.drop_path * last / max(last, 1))
        epoch = s.epochs + self.tuned  # numbered on after the search's: fresh data orders, no warm-up
        loop.set_lr(loop.w_opt, epoch)
        batches = zip(loop.train_batches.epoch(epoch), cycle_batches(loop.val_batches, epoch, 0))
        loss = count = 0.0
        with self.model.mixing_projection(self.projector):
            for i, batch in enumerate(islice(batches, loop.steps_per_epoch())):
                out = loop.step(batch, epoch, i)
                loss, count = loss + float(out["loss"]), count + float(out["count"])
                self.bar.advance(self.task)
        self.model.set_drop_path(0.0)
        self.tuned += 1
        return loss / max(count, 1)

    # -- the whole selection ---------------------------------------------------------------------
    def candidates(self, cell: str, edge: int) -> list[int]:
        """The ops of an edge DARTS-PT may choose: all of them, except `none` where the genotype cannot hold it."""
        return [o for o, n in enumerate(self.model.edge_ops[cell][edge]) if self.k is None or n != "none"]

    def work(self) -> int:
        """Candidate evaluations and fine-tuning steps in all (every edge and wide node is decided once)."""
        evals = sum(len(self.candidates(c, e)) for c, n in self.rows.items() for e in range(n))
        if self.k is not None:
            widths = [len(rows) for nodes in self.space.node_edges(self.scfg).values() for rows in nodes]
            evals += sum(m for w in widths for m in range(self.k + 1, w + 1))
        return evals + self.cfg.tune_epochs * (len(self.rounds) - 1) * self.loop.steps_per_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.cfg), "loop": self.loop.state_dict(), "projector": self.projector.state_dict(),
                "generator": self.generator.get_state(), "rng": rng_state(), "done": self.done, "tuned": self.tuned,
                "log": self.log}

    def resume(self) -> bool:
        """Continue from this selection's checkpoint, if a killed run left one; refuses other settings."""
        if not (self.run.ckpt_dir / CHECKPOINT).is_file():
            return False
        try:
            state = self.run.load_checkpoint(CHECKPOINT, self.trainer.device)
        except NasctlError as exc:  # killed between writing it and recording its SHA-256: the selection is
            self.say(f"DARTS-PT: starting over ({exc})")  # deterministic, so starting over gives the same result
            return False
        if state["config"] != asdict(self.cfg):
            raise NasctlError(
                f"{self.run.ckpt_dir / CHECKPOINT} holds a DARTS-PT selection started with {state['config']}, not "
                f"{asdict(self.cfg)}; rerun it with those settings to resume, or delete the file to start over."
            )
        self.loop.load_state_dict(state["loop"])
        self.projector.load_state_dict(state["projector"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        self.done, self.tuned, self.log = state["done"], state["tuned"], state["log"]
        return True

    def checkpoint(self) -> None:
        self.run.save_checkpoint(self.state_dict(), CHECKPOINT)

    def say(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def select(self) -> G.Genotype:
        """All decisions with fine-tuning in between (resuming a killed selection); the projected genotype."""
        if self.resume():
            self.say(f"DARTS-PT: resuming {self.run.path} after {self.done} of {len(self.rounds)} decision rounds")
        else:
            self.loop.w_opt.state.clear()  # PT restarts the weight SGD for the fine-tuning (projection.py:134)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=self.console, disable=not self.console.is_terminal) as self.bar:
            self.task = self.bar.add_task("DARTS-PT", total=self.work())
            for r in range(self.done, len(self.rounds)):
                while r > 0 and self.tuned < r * self.cfg.tune_epochs:
                    loss = self.tune_epoch()
                    lr = self.loop.lr(self.loop.hp.epochs + self.tuned - 1)
                    self.say(f"DARTS-PT: fine-tuning epoch {self.tuned}/{self.cfg.tune_epochs * (len(self.rounds) - 1)}"
                             f" train_loss={loss:.4f} lr={lr:.5g}")
                    self.checkpoint()
                for step in self.rounds[r]:
                    record = self.decide_op(step.cell) if step.kind == "op" else self.decide_node(step.cell)
                    self.log.append(record)
                    self.say(f"DARTS-PT: decision round {r + 1}/{len(self.rounds)}: {describe(record)}")
                self.done = r + 1
                self.checkpoint()
        return self.genotype()

    def genotype(self) -> G.Genotype:
        """The space's derive rule ranking the projected weights themselves."""
        return self.space.derive({k: w.detach().float().cpu() for k, w in self.weights().items()}, self.scfg)


def describe(record: dict[str, Any]) -> str:
    if record["kind"] == "op":
        accs = ", ".join(f"{n} {a:.2f}" for n, a in record["val_acc_without"].items())
        return f"{record['cell']} edge {record['edge']} -> {record['op']} (val acc without each op: {accs})"
    dropped = ", ".join(f"{d['edge']} ({d['val_acc_without']:.2f})" for d in record["dropped"])
    return f"{record['cell']} node {record['node']} keeps edges {record['kept_edges']}, dropped {dropped}"


def refuse_sampled(run: Run, space: Space, scfg: Any) -> None:
    """Refuse a search whose supernet does not mix all candidate ops with weights DARTS-PT can mask."""
    relaxation = build_relaxation(run.config.get("relaxation"), space.node_edges(scfg))
    if "mixing_weights" in relaxation.lacks:
        raise NasctlError(
            f"selection=darts_pt cannot select from {run.path}: its supernet was searched with "
            f"relaxation={relaxation.cfg.name}, which does not mix every candidate op of an edge with weights that "
            "can be set from outside (GDAS runs one sampled op per edge). DARTS-PT ranks each op by the accuracy "
            "the supernet loses when that op's weight in the mixture is set to zero, and such a supernet was never "
            "trained to mix its ops, so that accuracy says nothing about the op. Use selection=argmax for this run."
        )


def select(run: Run, space: Space, scfg: Any, node: Any, console: Console) -> G.Genotype:
    """The DARTS-PT genotype of a finished search run."""
    cfg: DartsPTConfig = OmegaConf.to_object(validate(node, DartsPTConfig, "selection 'darts_pt'"))
    if run.manifest.get("status") != "completed":
        raise NasctlError(
            f"selection=darts_pt needs the trained supernet of a finished search; {run.path} is "
            f"{run.manifest.get('status')}. Finish it first (nasctl search resume={run.path})."
        )
    refuse_sampled(run, space, scfg)
    return DartsPT(run, space, scfg, cfg, console).select()


SELECTIONS.register("darts_pt")(Selection(select, "genotype_darts_pt.json"))
