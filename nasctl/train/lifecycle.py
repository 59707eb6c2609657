"""One stage lifecycle: create or resume the run, record it, fit its loop, finish once.

A stage is a `StageLoop` subclass (search, retrain): it names its config section, checks its
settings and gathers its inputs before a new run directory exists (`prepare`), and gets the
schedule, step accounting, evaluation pass and steps-per-epoch cap from the base. `run_stage`
drives any of them; `build_loop` is the factory both it and `nasctl bench` use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from nasctl.errors import NasctlError
from nasctl.store import Run
from nasctl.train import distributed
from nasctl.train.trainer import Trainer, recording, seed_everything


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """lr(e) = lr_min + (lr - lr_min)(1 + cos(pi e / E)) / 2, in closed form at epoch e of E."""
    return lr_min + (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs)) / 2


def step_totals(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """What a step returns to the trainer: summed loss, correct predictions and sample count, on the device."""
    n = torch.full((), y.numel(), device=y.device)  # not torch.tensor(): a host-to-device copy syncs
    return {"loss": loss.detach() * n, "correct": (logits.argmax(1) == y).sum(), "count": n}


@torch.no_grad()
def eval_pass(
    forward: Callable[[torch.Tensor], torch.Tensor], batches: Any, autocast: Callable[[], Any],
    max_batches: int | None = None, top5: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy and top-1 (and top-5) accuracy in % of `forward`'s logits over `batches`' epoch 0."""
    loss = correct = correct5 = count = 0
    for x, y in islice(batches.epoch(0), max_batches):
        with autocast():
            logits = forward(x).float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        if top5:
            correct5 += (logits.topk(min(5, logits.shape[1]), dim=1).indices == y[:, None]).any(1).sum()
        count += y.numel()
    if not count:
        raise NasctlError("The evaluation split is empty; check dataset.test_subset (or search.train_portion).")
    out = {"loss": float(loss) / count, "acc": 100.0 * float(correct) / count}
    return {**out, "top5": 100.0 * float(correct5) / count} if top5 else out


class StageLoop:
    """Base of a stage's loop: its config section `hp`, the lr schedule and the steps-per-epoch cap.

    Subclasses set `stage`, `train_batches` and the trainer's Loop methods (`batches`, `step`,
    `end_epoch`, `state_dict`, `load_state_dict`).
    """

    stage: ClassVar[str]  # the config section and the run kind: "search", "retrain"
    train_batches: Any

    def __init__(self, cfg: DictConfig, trainer: Trainer, run: Run) -> None:
        self.cfg, self.trainer, self.run, self.hp = cfg, trainer, run, cfg[self.stage]

    @classmethod
    def prepare(cls, cfg: DictConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
        """Refuse bad settings before a new run exists; returns the loop's inputs besides the config."""
        return {}

    def begin(self, resume: bool) -> dict[str, Any]:
        """Called once the loop is built: write a new run's inputs; returns manifest fields for `running`."""
        return {}

    def result(self) -> dict[str, Any]:
        """Manifest fields of the completed run."""
        return {}

    def finished(self) -> bool:
        """True once the loop asks to end before its last epoch (a stage that can stop early overrides it)."""
        return False

    def steps_per_epoch(self) -> int:
        cap = self.hp.steps_per_epoch
        return min(len(self.train_batches), cap) if cap else len(self.train_batches)

    def lr(self, epoch: int) -> float:
        """The weight lr at `epoch`: cosine from `hp.lr` to `hp.lr_min` unless a stage says otherwise."""
        return cosine_lr(epoch, self.hp.epochs, self.hp.lr, self.hp.lr_min)

    def set_lr(self, opt: torch.optim.Optimizer, epoch: int) -> None:
        for group in opt.param_groups:
            group["lr"] = self.lr(epoch)


def build_loop(cls: type[StageLoop], cfg: DictConfig, trainer: Trainer, run: Run, inputs: dict[str, Any]) -> StageLoop:
    """A stage's loop from its config and prepared inputs (the one factory: `run_stage` and `nasctl bench`)."""
    return cls(cfg, trainer, run, **inputs)


def run_stage(cls: type[StageLoop], cfg: DictConfig, out_dir: Path, overrides: Iterable[str]) -> Run:
    """Run (or resume, with `resume=`) one stage in `out_dir`; returns the finished run."""
    resume = distributed.from_main(bool(cfg.resume) and (out_dir / "manifest.json").exists())
    run_cls = distributed.run_class()  # under torchrun only rank 0 writes
    if resume:
        run = run_cls(out_dir)
        if not run.resumable(cfg.resume):
            return run
        cfg = run.resume_config(cfg)
        inputs = cls.prepare(cfg, out_dir, resume=True)
    else:
        inputs = cls.prepare(cfg, out_dir, resume=False)
        run = run_cls.create(out_dir, cls.stage, cfg.seed, list(overrides), cfg)
    seed_everything(cfg.seed)
    with recording(run, cls.stage):
        trainer = Trainer(cfg.trainer, run)
        loop = build_loop(cls, cfg, trainer, run, inputs)
        run.update(status="running", device=str(trainer.device), processes=distributed.world(), **loop.begin(resume))
        trainer.fit(loop, loop.hp.epochs, resume=resume, label=cls.stage)
    run.finish("completed", **loop.result())
    return run
