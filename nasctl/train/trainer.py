"""Runs the epochs of a `Loop`: device, precision, progress bar, metrics, checkpoints, resume.

The trainer knows nothing about NAS. A loop yields batches, takes a step on each (returning
device tensors, so nothing syncs with the host inside the step) and summarises an epoch.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from typing import Any, Iterator, Protocol

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from nasctl.config import TrainerConfig
from nasctl.errors import NasctlError
from nasctl.store import Run


class Interrupted(NasctlError):
    """The run stopped on a signal after writing a checkpoint."""


class Loop(Protocol):
    """What a stage gives the trainer."""

    def steps_per_epoch(self) -> int: ...

    def batches(self, epoch: int, start_step: int) -> Iterator[Any]: ...

    def step(self, batch: Any, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns summed `loss`, `correct` and the `count` of samples."""

    def end_epoch(self, epoch: int) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def pick_device(name: str) -> torch.device:
    """`auto` = CUDA when available, else CPU; asking for CUDA without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise NasctlError(f"trainer.device={name} was asked for, but no CUDA GPU is available; use trainer.device=cpu.")
    if name != "cpu" and not name.startswith("cuda"):
        raise NasctlError(f"trainer.device={name} is not one of auto, cpu, cuda.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Drives a Loop over epochs with progress, metrics.jsonl and atomic checkpoints."""

    def __init__(self, cfg: TrainerConfig, run: Run) -> None:
        self.cfg = cfg
        self.run = run
        self.device = pick_device(cfg.device)
        if cfg.precision not in ("fp32", "bf16"):
            raise NasctlError(f"trainer.precision={cfg.precision} is not one of fp32, bf16.")
        self._stop_signal: int | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        return model.to(self.device, memory_format=fmt)

    # -- checkpoints ----------------------------------------------------------------------
    def _save(self, loop: Loop, epoch: int, step: int, totals: dict[str, torch.Tensor]) -> None:
        self.run.save_checkpoint(
            {"epoch": epoch, "step": step, "loop": loop.state_dict(), "rng": rng_state(), "totals": totals}
        )

    def _restore(self, loop: Loop) -> tuple[int, int, dict[str, torch.Tensor]]:
        state = self.run.load_latest_good()
        loop.load_state_dict(state["loop"])
        set_rng_state(state["rng"])
        return state["epoch"], state["step"], {k: v.to(self.device) for k, v in state["totals"].items()}

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT ask for a checkpoint at the next step boundary."""

        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- the loop -------------------------------------------------------------------------
    def fit(self, loop: Loop, epochs: int, resume: bool = False, label: str = "train") -> None:
        """Run epochs [start, epochs) of `loop`, continuing from the last checkpoint if `resume`."""
        epoch, step, totals = self._restore(loop) if resume else (0, 0, {})
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                   TimeElapsedColumn(), TimeRemainingColumn())
        with self._signals(), Progress(*columns, disable=not self.cfg.progress) as bar:
            while epoch < epochs:
                n = loop.steps_per_epoch()
                task = bar.add_task(f"{label} {epoch + 1}/{epochs}", total=n, completed=step, stats="")
                t0 = time.time()
                for batch in loop.batches(epoch, step):
                    out = loop.step(batch, epoch, step)
                    totals = {k: totals.get(k, 0) + v.detach() for k, v in out.items()}
                    step += 1
                    if step % self.cfg.log_every == 0 or step == n:
                        bar.update(task, completed=step, stats=self._stats(totals, epoch, step))
                    if self._stop_signal is not None:
                        self._save(loop, epoch, step, totals)
                        raise Interrupted(f"Interrupted by signal {self._stop_signal} at epoch {epoch}, step {step}.")
                    if self.cfg.checkpoint_every_steps and step % self.cfg.checkpoint_every_steps == 0 and step < n:
                        self._save(loop, epoch, step, totals)
                record = {"epoch": epoch, **self._summary(totals, epoch, step)}
                record.update(loop.end_epoch(epoch))
                record["epoch_time"] = time.time() - t0
                self.run.log_metrics(record)
                epoch, step, totals = epoch + 1, 0, {}
                self._save(loop, epoch, step, totals)
                bar.update(task, description=f"{label} {epoch}/{epochs}", stats=self._format(record))

    def _summary(self, totals: dict[str, torch.Tensor], epoch: int, step: int) -> dict[str, float]:
        """Host-side train metrics; a non-finite loss stops the run (last good checkpoint kept)."""
        count = float(totals["count"])
        loss = float(totals["loss"]) / count
        if not np.isfinite(loss):
            raise NasctlError(
                f"Non-finite training loss ({loss}) at epoch {epoch}, step {step}; stopped. "
                f"The last good checkpoint is kept in {self.run.ckpt_dir}."
            )
        return {"train_loss": loss, "train_acc": 100.0 * float(totals["correct"]) / count}

    def _stats(self, totals: dict[str, torch.Tensor], epoch: int, step: int) -> str:
        return self._format(self._summary(totals, epoch, step))

    @staticmethod
    def _format(record: dict[str, Any]) -> str:
        keys = ("train_loss", "train_acc", "val_acc", "test_acc")
        return "  ".join(f"{k}={record[k]:.3f}" for k in keys if isinstance(record.get(k), float))
