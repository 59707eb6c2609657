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
from nasctl.search.stage import cosine_lr
from nasctl.store import Run, atomic_write
from nasctl.train import Trainer, distributed, recording, seed_everything

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


@torch.no_grad()
def test_pass(model: EvalNetwork, batches: Any, autocast: Any, max_batches: int | None = None) -> dict[str, float]:
    """Mean cross-entropy, top-1 (and top-5 for many classes) accuracy in % over the test batches."""
    model.eval()
    loss = correct = correct5 = count = 0
    for x, y in islice(batches.epoch(0), max_batches):
        with autocast():
            logits = model(x)[0].float()
        loss += F.cross_entropy(logits, y, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += (top[:, 0] == y).sum()
        correct5 += (top == y[:, None]).any(1).sum()
        count += y.numel()
    if not count:
        raise NasctlError("The test split is empty; check dataset.test_subset.")
    out = {"test_loss": float(loss) / count, "test_acc": 100.0 * float(correct) / count}
    if logits.shape[1] >= TOP5_MIN_CLASSES:
        out["test_top5"] = 100.0 * float(correct5) / count
    return out


class RetrainLoop:
    """One retrain run's model, optimizer and data, driven by the shared Trainer."""

    def __init__(self, cfg: DictConfig, trainer: Trainer, run: Run, genotype: G.Genotype) -> None:
        check_params(cfg)
        self.cfg, self.trainer, self.run, r, d = cfg, trainer, run, cfg.retrain, cfg.dataset
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
        self.opt = torch.optim.SGD(self.model.parameters(), lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay,
                                   **trainer.optimizer_kwargs())
        self.best_acc = -math.inf

    # -- the Loop protocol ------------------------------------------------------------------
    def steps_per_epoch(self) -> int:
        cap = self.cfg.retrain.steps_per_epoch
        return min(len(self.train_batches), cap) if cap else len(self.train_batches)

    def lr(self, epoch: int) -> float:
        r = self.cfg.retrain
        if r.lr_schedule == "step":
            return r.lr * r.lr_gamma**epoch
        return cosine_lr(epoch, r.epochs, r.lr, r.lr_min)

    def drop_prob(self, epoch: int) -> float:
        return self.cfg.retrain.drop_path * epoch / self.cfg.retrain.epochs

    def batches(self, epoch: int, start_step: int) -> Iterator[tuple]:
        for group in self.opt.param_groups:
            group["lr"] = self.lr(epoch)
        self.model.set_drop_path(self.drop_prob(epoch))
        return islice(self.train_batches.epoch(epoch, start_step), self.steps_per_epoch() - start_step)

    def step(self, batch: tuple, epoch: int, step: int) -> dict[str, torch.Tensor]:
        x, y = batch
        r = self.cfg.retrain
        self.model.train()
        self.trainer.begin_step()
        self.opt.zero_grad(set_to_none=True)
        with self.trainer.autocast():
            logits, aux = self.net(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=r.label_smoothing)
        if aux is not None:
            loss = loss + r.auxiliary_weight * F.cross_entropy(aux.float(), y, label_smoothing=r.label_smoothing)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), r.grad_clip)
        self.opt.step()
        n = torch.full((), y.numel(), device=y.device)  # no host-to-device copy (a sync)
        return {"loss": loss.detach() * n, "correct": (logits.argmax(1) == y).sum(), "count": n}

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        record = test_pass(self.model, self.test_batches, self.trainer.autocast, self.cfg.retrain.eval_batches)
        if record["test_acc"] > self.best_acc:
            self.best_acc = record["test_acc"]
            self.run.save_checkpoint({"model": self.model.state_dict(), "epoch": epoch, **record}, "best.pt")
        return {"lr": self.lr(epoch), "drop_path": self.drop_prob(epoch), **record, "best_test_acc": self.best_acc}

    def finished(self) -> bool:
        return False  # a retrain runs all its epochs

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "best_acc": self.best_acc}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.best_acc = state["best_acc"]


def run_retrain(cfg: DictConfig, out_dir: Path, overrides: list[str]) -> Run:
    """Run (or resume, with `resume=`) a retrain in `out_dir`; returns the finished run."""
    resume = distributed.from_main(bool(cfg.resume) and (out_dir / "manifest.json").exists())
    if resume:
        run = distributed.run_class()(out_dir)  # under torchrun only rank 0 writes
        if not run.resumable(cfg.resume):
            return run
        cfg = run.resume_config(cfg)
        genotype = G.load(out_dir / "genotype.json")  # the run's own, even if `latest` has moved on
    else:
        if OmegaConf.is_missing(cfg, "genotype"):
            raise NasctlError(
                f"retrain needs genotype=: a published one ({', '.join(G.ZOO)}), `latest` (the latest search), "
                "a genotype.json, a search run directory or a literal."
            )
        genotype = check_genotype(G.resolve_genotype(cfg.genotype, cfg.run_root))
        check_params(cfg)
        run = distributed.run_class().create(out_dir, "retrain", cfg.seed, overrides, cfg)
        if distributed.is_main():
            atomic_write(out_dir / "genotype.json", G.dumps(genotype).encode())
    seed_everything(cfg.seed)
    with recording(run, "retrain"):
        trainer = Trainer(cfg.trainer, run)
        loop = RetrainLoop(cfg, trainer, run, genotype)
        run.update(status="running", device=str(trainer.device), processes=distributed.world(),
                   genotype=genotype.to_dict(), params_m=round(count_params(loop.model), 4))
        trainer.fit(loop, cfg.retrain.epochs, resume=resume, label="retrain")
    run.finish("completed", best_test_acc=loop.best_acc, final=run.metrics()[-1])
    return run
