"""`nasctl search`: the bilevel DARTS loop over a registered space with composed stabilizers.

Per iteration (Liu et al. 2019, cnn/train_search.py): architecture step on a validation
batch first, then a weight step on the training batch. The weight LR follows the closed
form cosine lr(e) = lr_min + (lr - lr_min)(1 + cos(pi e / E)) / 2 at epoch e. The run's
lifecycle (create or resume, record, fit, finish) is `train.lifecycle.run_stage`'s.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from nasctl import genotype as G
from nasctl.benchmarks import table_for
from nasctl.data import DeviceBatches, load_split
from nasctl.data.batches import VALIDATION_HALF, derive_seed
from nasctl.errors import NasctlError
from nasctl.relaxations import Relaxation, build_relaxation
from nasctl.relaxations.base import regrow
from nasctl.search import diagnostics, hessian
from nasctl.search.architect import Architect
from nasctl.spaces import space_config
from nasctl.stabilizers import Batches, EarlyStop, Stabilizers
from nasctl.store import Run, atomic_write
from nasctl.train import Trainer
from nasctl.train.lifecycle import StageLoop, cosine_lr, eval_pass, run_stage, step_totals
from nasctl.train.trainer import full_fp32, optimizer_settings


def check_params(cfg: DictConfig) -> None:
    """The choices among names; numeric ranges are checked for every stage by `config.check_ranges`."""
    s = cfg.search
    if s.order not in ("first", "second"):
        raise NasctlError(f"search.order must be 'first' or 'second', got {s.order!r}.")
    if s.w_nesterov and s.w_momentum == 0:
        raise NasctlError("search.w_nesterov=true needs search.w_momentum > 0 (Nesterov momentum without momentum).")
    if cfg.diagnostics.hessian_method not in hessian.METHODS:
        raise NasctlError(f"diagnostics.hessian_method must be one of {', '.join(hessian.METHODS)}, "
                          f"got {cfg.diagnostics.hessian_method!r}.")


class SearchLoop(StageLoop):
    """One search run's state and its step, driven by the shared Trainer."""

    stage = "search"

    @classmethod
    def prepare(cls, cfg: DictConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
        check_params(cfg)
        relaxation_of(cfg).refuse(requirements(cfg, Stabilizers(cfg.stabilizer)))  # before the run directory exists
        return {}

    def __init__(self, cfg: DictConfig, trainer: Trainer, run: Run) -> None:
        super().__init__(cfg, trainer, run)
        s = self.hp
        self.space, self.space_cfg = space_config(cfg.space)
        self.bench = table_for(self.space.genotype, cfg.paths)  # NB201: log the argmax arch's accuracy
        self.hooks = Stabilizers(cfg.stabilizer)
        self.relaxation = relaxation_of(cfg)
        data = load_split(cfg.dataset, "train", trainer.device)
        train, val = data.halves(s.train_portion)
        if min(len(train), len(val)) < s.batch_size:
            raise NasctlError(
                f"search.batch_size={s.batch_size} is larger than a half of the {len(data)} training images."
            )
        dev, d = trainer.device, cfg.dataset
        common = dict(mean=d.mean, std=d.std, seed=cfg.seed)
        self.train_batches = DeviceBatches(train, dev, s.batch_size, augment=s.augment, shuffle=True, drop_last=True, **common)
        # the validation half's order and crops come from a seed stream of its own, not paired with the training half's
        self.val_batches = DeviceBatches(val, dev, s.batch_size, augment=s.augment, shuffle=True, drop_last=True,
                                         **{**common, "seed": derive_seed(cfg.seed, VALIDATION_HALF)})
        self.eval_batches = DeviceBatches(val, dev, s.batch_size, augment=None, shuffle=False, drop_last=False, **common)

        model = self.space.build(self.space_cfg, d.num_classes, d.channels)
        self.relaxation.attach(model)
        self.hooks.configure(model)
        self.model = trainer.prepare(model)
        self.stage = 0  # of a staged relaxation (DrNAS's progressive learning)
        self.w_opt = self.weight_optimizer()
        with optimizer_settings("search"):
            self.architect = Architect(
                self.model, self.w_opt, s.order, self.hooks, s.arch_lr, tuple(s.arch_betas), s.arch_weight_decay,
                trainer.autocast, trainer.optimizer_kwargs(),
            )
        self.alpha_history: dict[str, list[np.ndarray]] = {k: [] for k in self.relaxation.params(self.model)}
        self.epoch_scalars: dict[str, float] = {}
        self.stopped: EarlyStop | None = None  # set when a stabilizer ends the search early (DARTS-ES)

    def weight_optimizer(self) -> torch.optim.SGD:
        """SGD on the supernet's current weights (rebuilt when a stage replaces some)."""
        s = self.hp
        self.weights = self.model.weight_parameters()
        with optimizer_settings("search"):
            return torch.optim.SGD(
                self.weights, lr=s.w_lr, momentum=s.w_momentum, weight_decay=s.w_weight_decay, nesterov=s.w_nesterov,
                **self.trainer.optimizer_kwargs(),
            )

    def enter_stages(self, stage: int) -> None:
        """Let the relaxation change the supernet up to `stage`; the weight optimizer's state follows (DR net2wider.py:79-116)."""
        while self.stage < stage:
            self.stage += 1
            grown = self.relaxation.enter_stage(self.model, self.stage)
            old, self.w_opt = self.w_opt, self.weight_optimizer()
            for w in self.weights:
                prev, plan = grown.get(w, (w, []))
                if prev in old.state:
                    self.w_opt.state[w] = {k: regrow(v, plan) if torch.is_tensor(v) and v.shape == prev.shape else v
                                           for k, v in old.state[prev].items()}
            self.architect.w_opt = self.w_opt

    def result(self) -> dict[str, Any]:
        stop = {} if self.stopped is None else {"reason": self.stopped.reason, "early_stop": self.stopped.details}
        return {"genotype": G.load(self.run.path / "genotype.json").to_dict(), **stop}

    # -- the Loop protocol ------------------------------------------------------------------
    def lr(self, epoch: int) -> float:
        s = self.cfg.search
        return cosine_lr(epoch, s.epochs, s.w_lr, s.w_lr_min)

    def batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        epochs = self.cfg.search.epochs
        self.enter_stages(self.relaxation.stage_at(epoch, epochs))
        self.epoch_scalars = {**self.relaxation.on_epoch_start(epoch, epochs),
                              **self.hooks.on_epoch_start(self.model, epoch, epochs)}
        self.set_lr(self.w_opt, epoch)
        s = self.cfg.search
        self.model.set_drop_path(s.drop_path * epoch / max(s.epochs - 1, 1))  # RobustDARTS ramp
        val = cycle_batches(self.val_batches, epoch, start_step)
        return islice(zip(self.train_batches.epoch(epoch, start_step), val), self.steps_per_epoch() - start_step)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.trainer.autocast():
            return F.cross_entropy(self.model(x).float(), y)

    def step(self, batch: tuple, epoch: int, step: int) -> dict[str, torch.Tensor]:
        (x_tr, y_tr), (x_val, y_val) = batch
        b = Batches(x_tr, y_tr, x_val, y_val)
        self.model.train()
        arch = not self.relaxation.arch_frozen(epoch, self.cfg.search.epochs)
        if arch and not self.relaxation.weights_first:
            self.architect.step(b, self.lr(epoch))
        logits, loss = self.weight_step(b)
        if arch and self.relaxation.weights_first:
            self.architect.step(b, self.lr(epoch))
        return step_totals(loss, logits, y_tr)

    def weight_step(self, b: Batches) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of the weights on the training batch; returns its logits and loss."""
        self.w_opt.zero_grad(set_to_none=True)
        with self.hooks.weight_step(self.model, b, self.loss):
            with self.trainer.autocast():
                logits = self.model(b.x_train).float()
            loss = F.cross_entropy(logits, b.y_train)
            loss.backward(inputs=self.weights)
        for w in self.weights:  # a weight this forward did not reach (GDAS's unsampled ops) still takes its
            if w.grad is None:  # momentum and decay step, as under AD's zero_grad (zeros, not None); fused SGD needs it
                w.grad = torch.zeros_like(w)
        torch.nn.utils.clip_grad_norm_(self.weights, self.cfg.search.grad_clip)
        self.w_opt.step()
        return logits, loss

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        out = eval_pass(self.model, self.eval_batches, self.trainer.autocast, self.cfg.search.eval_batches)
        return {"val_loss": out["loss"], "val_acc": out["acc"]}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        params = self.relaxation.params(self.model)
        if not all(torch.isfinite(a).all() for a in params.values()):
            raise NasctlError(f"Non-finite architecture parameters after epoch {epoch}; stopped.")
        genotype = self.space.derive(self.relaxation.scores(params), self.space_cfg)
        atomic_write(self.run.path / "genotype.json", G.dumps(genotype).encode())
        alphas = {k: a.detach() for k, a in self.model.alphas.items()}
        for k, a in params.items():
            self.alpha_history[k].append(a.float().cpu().numpy().copy())  # a copy, not a view of alpha
        buf = io.BytesIO()
        np.savez(buf, **{k: np.stack(v) for k, v in self.alpha_history.items()})
        atomic_write(self.run.path / "alphas.npz", buf.getvalue())
        record: dict[str, Any] = {"lr": self.lr(epoch), **self.evaluate(), **self.epoch_scalars}
        record.update(genotype=str(genotype), skip_count=genotype.skip_count(),
                      alpha_entropy=diagnostics.alpha_entropy(alphas))
        if self.bench is not None:
            record.update({f"bench_{k}": v for k, v in self.bench.accuracies(str(genotype)).items()})
        d, epochs = self.cfg.diagnostics, self.cfg.search.epochs
        logged = d.hessian_every and (epoch % d.hessian_every == 0 or epoch == epochs - 1)
        if logged or self.hooks.needs_hessian(epoch, epochs):
            x, y = next(self.val_batches.epoch(epoch))  # one (augmented) search-val batch, as RD
            # double gradients: eager (compiled graphs cannot) and plain fp32 whatever trainer.precision says
            with torch.compiler.set_stance("force_eager"), full_fp32():
                record["hessian_eig"] = hessian.dominant_eigenvalue(
                    self.model, self.architect.fp32_loss, x, y, self.cfg.search.arch_weight_decay, d.hessian_method)
        self.stopped = self.hooks.on_epoch_end(epoch, epochs, record, genotype)
        if self.stopped is not None:
            atomic_write(self.run.path / "genotype.json", G.dumps(self.stopped.genotype).encode())
            record["early_stop"] = self.stopped.reason
        return record

    def finished(self) -> bool:
        return self.stopped is not None

    def state_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "model": self.model.state_dict(),
            "w_opt": self.w_opt.state_dict(),
            "a_opt": self.architect.opt.state_dict(),
            "hooks": self.hooks.state_dict(),
            "alpha_history": self.alpha_history,
            "stopped": None if self.stopped is None else vars(self.stopped) | {"genotype": self.stopped.genotype.to_dict()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.enter_stages(state.get("stage", 0))  # the saved shapes and masks first
        self.model.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.architect.opt.load_state_dict(state["a_opt"])
        self.hooks.load_state_dict(state["hooks"])
        self.alpha_history = state["alpha_history"]
        stop = state.get("stopped")
        self.stopped = None if stop is None else EarlyStop(**stop | {"genotype": G.from_dict(stop["genotype"])})


def relaxation_of(cfg: DictConfig) -> Relaxation:
    """The search's relaxation, built for its space (a config without one is DARTS)."""
    space, scfg = space_config(cfg.space)
    return build_relaxation(cfg.get("relaxation"), space.node_edges(scfg))


def requirements(cfg: DictConfig, hooks: Stabilizers) -> list[tuple[str, str]]:
    """What the search asks of its relaxation: (the setting that asks, the requirement)."""
    wants = [(f"stabilizer={name}", need) for name, s in hooks.members.items() for need in s.requires]
    if cfg.search.order == "second":
        wants.append(("search.order=second", "arch_hessian"))
    if cfg.diagnostics.hessian_every:
        wants.append((f"diagnostics.hessian_every={cfg.diagnostics.hessian_every}", "arch_hessian"))
    return wants


def cycle_batches(batches: DeviceBatches, epoch: int, start_step: int) -> Iterator[tuple]:
    """Validation batches for the architecture step: this epoch's order, cycled if shorter."""
    yield from batches.epoch(epoch, start_step % len(batches))
    while True:
        yield from batches.epoch(epoch)


def run_search(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> Run:
    """Run (or resume, with `resume=`) a search in `out_dir`; returns the finished run."""
    return run_stage(SearchLoop, cfg, out_dir, overrides)
