"""Runs the epochs of a `Loop`: device, precision, progress bar, metrics, checkpoints, resume.

The trainer knows nothing about NAS. A loop yields batches, takes a step on each (returning
device tensors, so nothing syncs with the host inside the step) and summarises an epoch.
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from omegaconf import OmegaConf

from nasctl.config import TrainerConfig
from nasctl.errors import NasctlError
from nasctl.store import Run
from nasctl.train import distributed
from nasctl.train.progress import progress_display
from nasctl.train.tensorboard import scalars


class Interrupted(NasctlError):
    """The run stopped on a signal after writing a checkpoint."""


# SIGUSR2 is what SLURM sends through submitit before a time limit (and on preemption where the
# cluster has `PreemptParameters=send_user_signal`); submitit's handler then requeues the job.
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGUSR2") if hasattr(signal, n))
REQUEUE_SIGNAL = getattr(signal, "SIGUSR2", None)
SWITCHES = ("precision", "tf32", "channels_last", "compile", "cuda_graphs", "fused_optimizer")  # trainer.auto resolves these


@contextlib.contextmanager
def recording(run: Run, kind: str) -> Iterator[None]:
    """Mark the run `interrupted` (with the resume command) or `failed` (with the reason) if the block raises."""
    try:
        yield
    except Interrupted as exc:
        run.finish("interrupted", reason=str(exc))
        raise Interrupted(f"{exc} Resume with: nasctl {kind} resume={run.path}") from None
    except BaseException as exc:
        run.finish("failed", reason=f"{type(exc).__name__}: {exc}")
        raise


class Loop(Protocol):
    """What a stage gives the trainer."""

    def steps_per_epoch(self) -> int: ...

    def batches(self, epoch: int, start_step: int) -> Iterator[Any]: ...

    def step(self, batch: Any, epoch: int, step: int) -> dict[str, torch.Tensor]:
        """One optimisation step; returns summed `loss`, `correct` and the `count` of samples."""

    def end_epoch(self, epoch: int) -> dict[str, Any]: ...

    def finished(self) -> bool:
        """True once the loop asks to end before its last epoch (early stopping)."""

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


def resolve_switches(cfg: TrainerConfig, device: torch.device) -> TrainerConfig:
    """`cfg` with every speed switch set to `auto` replaced by `cfg.auto[device.type]`'s value, checked."""
    cfg = OmegaConf.merge(cfg)  # a copy: the caller's config keeps its `auto`s
    for key in SWITCHES:
        if cfg[key] == "auto":
            if device.type not in cfg.auto:
                raise NasctlError(f"trainer.{key}=auto, but trainer.auto has no entry for device type {device.type!r}.")
            cfg[key] = cfg.auto[device.type][key]
        elif key == "compile" and cfg[key] not in (True, False, "regional"):
            raise NasctlError(f"trainer.compile={cfg[key]} is not one of true, false, regional, auto.")
        elif key not in ("precision", "compile") and not isinstance(cfg[key], bool):
            raise NasctlError(f"trainer.{key}={cfg[key]} is not one of true, false, auto.")
    if cfg.precision not in ("fp32", "bf16"):
        raise NasctlError(f"trainer.precision={cfg.precision} is not one of fp32, bf16, auto.")
    if cfg.tf32 and device.type != "cuda":
        raise NasctlError(f"trainer.tf32=true needs a CUDA device (have {device.type}); set trainer.tf32=false.")
    if cfg.cuda_graphs and not (cfg.compile and device.type == "cuda"):
        raise NasctlError(
            f"trainer.cuda_graphs=true needs trainer.compile=true and a CUDA device (have compile={cfg.compile}, "
            f"device {device.type}); set trainer.cuda_graphs=false."
        )
    return cfg


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` where `precision` (resolved) is bf16, else a disabled one."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def set_tf32(on: bool) -> tuple[bool, bool]:
    """TF32 in CUDA matmuls and cuDNN convolutions on or off; returns the previous (matmul, cudnn) settings."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    return before


@contextlib.contextmanager
def full_fp32() -> Iterator[None]:
    """Plain fp32 inside the block (no autocast, no TF32), whatever the trainer's switches: finite differences."""
    before = set_tf32(False)
    try:
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@contextlib.contextmanager
def optimizer_settings(section: str) -> Iterator[None]:
    """Around building optimizers: torch's refusal of a setting (a ValueError) is a user error naming `section`."""
    try:
        yield
    except ValueError as exc:
        raise NasctlError(f"torch.optim refused the {section}.* settings: {exc}.") from None


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
        self.device = distributed.device(pick_device(cfg.device))
        self.cfg = resolve_switches(cfg, self.device)
        self.run = run
        self._stop_signal: int | None = None
        self._replaced: dict[int, Any] = {}

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast_for(self.device, self.cfg.precision)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move `model` to the device (NHWC with channels_last) and compile its forward in place.

        In place (`Module.compile`), so parameter names, `state_dict`, `functional_call` and the
        model's own methods stay as they are; every call of the model runs the compiled forward.
        `compile=regional` compiles each of the model's `compile_regions()` instead (its repeated
        blocks): identical blocks share one compiled graph, so compiling stops growing with depth.
        """
        fmt = torch.channels_last if self.cfg.channels_last else torch.preserve_format
        model = model.to(self.device, memory_format=fmt)
        mode = "reduce-overhead" if self.cfg.cuda_graphs else None
        if self.cfg.compile == "regional":
            if not hasattr(model, "compile_regions"):
                raise NasctlError(f"trainer.compile=regional: {type(model).__name__} names no compile_regions().")
            regions = list(model.compile_regions())
            # One code object serves every region: room for its shapes x train/eval x substituted weights.
            # Static shapes: inductor's dynamic-shape backward of a mixed edge fails on a CPU (torch 2.14).
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 8 * len(regions))
            for region in regions:
                region.compile(mode=mode, dynamic=False)
        elif self.cfg.compile:
            model.compile(mode=mode)
        return model

    def optimizer_kwargs(self) -> dict[str, bool]:
        """Keyword arguments for torch's SGD and Adam: the fused kernels, or torch's default."""
        return {"fused": True} if self.cfg.fused_optimizer else {}

    def begin_step(self) -> None:
        """Call before each step: sets TF32 (a process-wide flag) to this trainer's, and tells CUDA graphs
        that the previous step's outputs are no longer read."""
        if self.device.type == "cuda":
            set_tf32(self.cfg.tf32)
        if self.cfg.cuda_graphs:
            torch.compiler.cudagraph_mark_step_begin()

    # -- checkpoints ----------------------------------------------------------------------
    def _save(self, loop: Loop, epoch: int, step: int, totals: dict[str, torch.Tensor]) -> None:
        if totals:
            self._summary(totals, epoch, step)  # never checkpoint a state whose loss is not finite
        self.run.save_checkpoint(
            {"epoch": epoch, "step": step, "loop": loop.state_dict(), "rng": rng_state(),
             "totals": distributed.all_sum(totals)}
        )

    def _restore(self, loop: Loop) -> tuple[int, int, dict[str, torch.Tensor]]:
        state = self.run.load_latest_good()
        if state is None:  # killed before its first checkpoint: start over in place (same directory, manifest)
            self.run.truncate_metrics(0)
            return 0, 0, {}
        loop.load_state_dict(state["loop"])
        set_rng_state(state["rng"])
        self.run.truncate_metrics(state["epoch"])  # drop lines of epochs that will run again
        main = distributed.is_main()  # the saved totals are summed over ranks: rank 0 carries them
        totals = {k: v.to(self.device) if main else torch.zeros_like(v, device=self.device)
                  for k, v in state["totals"].items()}
        return state["epoch"], state["step"], totals

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGTERM/SIGINT/SIGUSR2 ask for a checkpoint at the next step boundary."""

        def handler(signum: int, _frame: Any) -> None:
            self._stop_signal = signum

        self._replaced = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
        try:
            yield
        finally:
            for s, h in self._replaced.items():
                signal.signal(s, h)

    def _stop(self, loop: Loop, epoch: int, step: int, totals: dict[str, torch.Tensor]) -> None:
        """Checkpoint, hand SIGUSR2 on to the handler it replaced (submitit's requeues and exits), then stop."""
        self._save(loop, epoch, step, totals)
        previous = self._replaced.get(self._stop_signal)
        if self._stop_signal == REQUEUE_SIGNAL and callable(previous):
            previous(self._stop_signal, None)
        raise Interrupted(f"Interrupted by signal {self._stop_signal} at epoch {epoch}, step {step}.")

    # -- the loop -------------------------------------------------------------------------
    def fit(self, loop: Loop, epochs: int, resume: bool = False, label: str = "train") -> None:
        """Run epochs [start, epochs) of `loop`, continuing from the last checkpoint if `resume`."""
        epoch, step, totals = self._restore(loop) if resume else (0, 0, {})
        main = distributed.is_main()  # under torchrun only rank 0 shows progress and writes
        progress = progress_display(self.cfg.progress and main)
        with self._signals(), progress as bar, scalars(self.run.path, self.cfg.tensorboard and main) as tensorboard:
            while epoch < epochs and not loop.finished():
                n = loop.steps_per_epoch()
                task = bar.add_task(f"{label} {epoch + 1}/{epochs}", total=n, completed=step, stats="")
                t0 = time.time()
                for batch in loop.batches(epoch, step):
                    self.begin_step()
                    out = loop.step(batch, epoch, step)
                    totals = {k: totals.get(k, 0) + v.detach() for k, v in out.items()}
                    step += 1
                    if step % self.cfg.log_every == 0 or step == n:
                        bar.update(task, completed=step, stats=self._stats(totals, epoch, step))
                    if distributed.any_rank(self._stop_signal is not None):
                        self._stop(loop, epoch, step, totals)
                    if self.cfg.checkpoint_every_steps and step % self.cfg.checkpoint_every_steps == 0 and step < n:
                        self._save(loop, epoch, step, totals)
                record = {"epoch": epoch, **self._summary(distributed.all_sum(totals), epoch, step)}
                record.update(loop.end_epoch(epoch))
                record["epoch_time"] = time.time() - t0
                self.run.log_metrics(record)
                tensorboard(record)
                epoch, step, totals = epoch + 1, 0, {}
                self._save(loop, epoch, step, totals)
                bar.update(task, description=f"{label} {epoch}/{epochs}", stats=self._format(record))
        distributed.barrier()  # rank 0 has written the last metrics and checkpoint before any rank goes on

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
