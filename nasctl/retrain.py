"""`nasctl retrain`: train a genotype's evaluation network from scratch and keep its best test checkpoint.

Follows `quark0/darts` cnn/train.py (CIFAR) and cnn/train_imagenet.py (ImageNet): SGD with momentum
and weight decay on all weights, an lr schedule in closed form at epoch e (cosine as in search, or
lr * gamma^e), the auxiliary loss weighted into the training loss, drop-path ramped p * e / E,
gradient clipping, and a plain cross-entropy test pass after every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from nasctl import genotype as G
from nasctl.data import DeviceBatches, HostBatches, load_folder_split, load_split
from nasctl.errors import NasctlError
from nasctl.evalnet import EvalNetwork, build_eval_network, check_genotype, count_params
from nasctl.store import Run, atomic_write
from nasctl.train import Trainer, distributed
from nasctl.train.lifecycle import StageLoop, eval_pass, run_stage, step_totals
from nasctl.train.trainer import optimizer_settings

FOLDER_DATASETS = ("imagenet",)  # read from disk per batch; everything else is one tensor in memory
TOP5_MIN_CLASSES = 100  # report top-5 accuracy from this many classes on (CIFAR-100, ImageNet)


def check_params(cfg: DictConfig) -> None:
    """The choices among names; numeric ranges are checked for every stage by `config.check_ranges`."""
    r = cfg.retrain
    if r.lr_schedule not in ("cosine", "step"):
        raise NasctlError(f"retrain.lr_schedule must be 'cosine' or 'step', got {r.lr_schedule!r}.")
    check_recipe(cfg.dataset, r.net)


def check_recipe(dataset: Any, net: Any) -> None:
    """ImageNet needs the ImageNet network (its stem downsamples by 8); refuse the CIFAR one on it."""
    if (dataset.name in FOLDER_DATASETS) != (net.stem == "imagenet"):
        raise NasctlError(
            f"dataset={dataset.name} with the {net.stem} network: use recipe=imagenet for ImageNet "
            "(it selects the dataset, the ImageNet network and its recipe) and recipe=cifar otherwise."
        )


def test_batches(dataset: Any, device: torch.device, batch_size: int, seed: int, workers: int) -> Any:
    """The test split, unaugmented and in order (DeviceBatches in memory, HostBatches for ImageNet)."""
    if dataset.name in FOLDER_DATASETS:
        return HostBatches(load_folder_split(dataset, "test"), device, batch_size, shuffle=False, drop_last=False,
                           seed=seed, num_workers=workers)
    return DeviceBatches(load_split(dataset, "test", device), device, batch_size, mean=dataset.mean, std=dataset.std,
                         augment=None, shuffle=False, drop_last=False, seed=seed)


def test_pass(model: EvalNetwork, batches: Any, autocast: Any, max_batches: int | None = None) -> dict[str, float]:
    """Mean cross-entropy, top-1 (and top-5 for many classes) accuracy in % over the test batches."""
    model.eval()
    top5 = model.classifier.out_features >= TOP5_MIN_CLASSES
    out = eval_pass(lambda x: model(x)[0], batches, autocast, max_batches, top5=top5)
    return {f"test_{k}": v for k, v in out.items()}


class RetrainLoop(StageLoop):
    """One retrain run's model, optimizer and data, driven by the shared Trainer."""

    stage = "retrain"

    @classmethod
    def prepare(cls, cfg: DictConfig, run_dir: Path, resume: bool) -> dict[str, Any]:
        """The genotype: a resumed run's own (even if `latest` has moved on), else `genotype=` resolved and checked."""
        if resume:
            return {"genotype": G.load(run_dir / "genotype.json")}
        if OmegaConf.is_missing(cfg, "genotype"):
            raise NasctlError(
                f"retrain needs genotype=: a published one ({', '.join(G.ZOO)}), `latest` (the latest search), "
                "a genotype.json, a search run directory or a literal."
            )
        genotype = check_genotype(G.resolve_genotype(cfg.genotype, cfg.paths.run_root))
        check_params(cfg)
        if distributed.is_main():  # before the manifest: a run killed at any point after it can resume
            atomic_write(run_dir / "genotype.json", G.dumps(genotype).encode())
        return {"genotype": genotype}

    def __init__(self, cfg: DictConfig, trainer: Trainer, run: Run, genotype: G.Genotype) -> None:
        super().__init__(cfg, trainer, run)
        self.genotype, r, d = genotype, self.hp, cfg.dataset
        dev = trainer.device
        if d.name in FOLDER_DATASETS:
            self.train_batches = HostBatches(load_folder_split(d, "train"), dev, r.batch_size, shuffle=True,
                                             drop_last=True, seed=cfg.seed, num_workers=r.workers)
        else:
            # drop_last: a one-image batch would break BatchNorm on the auxiliary head's 1x1 maps
            self.train_batches = DeviceBatches(load_split(d, "train", dev), dev, r.batch_size, mean=d.mean, std=d.std,
                                               augment=r.augment, shuffle=True, drop_last=True, seed=cfg.seed)
        if len(self.train_batches) == 0:
            raise NasctlError(f"retrain.batch_size={r.batch_size} is larger than the training set.")
        self.train_batches = distributed.shard(self.train_batches)  # torchrun: this rank's rows of each batch
        self.test_batches = test_batches(d, dev, r.batch_size, cfg.seed, r.workers)
        self.model = trainer.prepare(build_eval_network(genotype, d, r.net, auxiliary=r.auxiliary_weight > 0))
        self.net = distributed.parallel(self.model)  # DDP under torchrun (the forward that syncs gradients)
        with optimizer_settings("retrain"):
            self.opt = torch.optim.SGD(self.model.parameters(), lr=r.lr, momentum=r.momentum,
                                       weight_decay=r.weight_decay, **trainer.optimizer_kwargs())
        self.best_acc = -math.inf

    def begin(self, resume: bool) -> dict[str, Any]:
        return {"genotype": self.genotype.to_dict(), "params_m": round(count_params(self.model), 4)}

    def result(self) -> dict[str, Any]:
        return {"best_test_acc": self.best_acc, "final": self.run.metrics()[-1]}

    # -- the Loop protocol ------------------------------------------------------------------
    def lr(self, epoch: int) -> float:
        r = self.hp
        return r.lr * r.lr_gamma**epoch if r.lr_schedule == "step" else super().lr(epoch)

    def drop_prob(self, epoch: int) -> float:
        return self.cfg.retrain.drop_path * epoch / self.cfg.retrain.epochs

    def batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        self.set_lr(self.opt, epoch)
        self.model.set_drop_path(self.drop_prob(epoch))
        return islice(self.train_batches.epoch(epoch, start_step), self.steps_per_epoch() - start_step)

    def step(self, batch: tuple, epoch: int, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        r = self.cfg.retrain
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        with self.trainer.autocast():
            logits, aux = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        if aux is not None:
            loss = loss + r.auxiliary_weight * F.cross_entropy(aux.float(), y, label_smoothing=r.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
        self.opt.step()
        return step_totals(loss, logits, y)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        record = test_pass(self.model, self.test_batches, self.trainer.autocast, self.cfg.retrain.eval_batches)
        if record["test_acc"] > self.best_acc:
            self.best_acc = record["test_acc"]
            self.run.save_checkpoint({"model": self.model.state_dict(), "epoch": epoch, **record}, "best.pt")
        return {"lr": self.lr(epoch), "drop_path": self.drop_prob(epoch), **record, "best_test_acc": self.best_acc}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "best_acc": self.best_acc}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.best_acc = state["best_acc"]


def run_retrain(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> Run:
    """Run (or resume, with `resume=`) a retrain in `out_dir`; returns the finished run."""
    return run_stage(RetrainLoop, cfg, out_dir, overrides)
