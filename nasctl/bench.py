"""`nasctl bench`: search steps/s and retrain images/s for each trainer speed switch, against eager fp32.

A case is `nasctl search` or `nasctl retrain` composed with its overrides; a variant adds trainer
overrides to the eager fp32 baseline. All variants of a case live in one process: each is built
from the same seed, warmed up (compiling happens there), then timed in interleaved rounds whose
order rotates, so load drifts hit every variant alike; the median round counts. A variant whose
resolved switches equal an earlier one's (`auto` on a CPU) reuses its numbers. Memory is the
variant's own: what its loop holds after the warm-up plus the peak its first timed round adds
(CUDA allocator; on Linux CPUs the resident set after `malloc_trim`, else n/a).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.table import Table

from nasctl.errors import NasctlError
from nasctl.original import Original, why_not
from nasctl.store import Run, atomic_write
from nasctl.train import Loop, Trainer, pick_device, seed_everything
from nasctl.train.lifecycle import build_loop
from nasctl.train.trainer import SWITCHES

BASELINE = "eager"
log = Console(stderr=True)  # progress lines; the table goes to stdout
STAGES = ("search", "retrain")


@dataclass
class Result:
    """One (case, variant) measurement, or why it was not taken."""

    case: str
    variant: str
    unit: str = ""
    rate: float | None = None  # steps/s (search) or images/s (retrain), median round
    ratio: float | None = None  # rate / the eager baseline's rate
    warmup_s: float | None = None  # wall time of the warm-up steps (includes compiling)
    memory_mib: float | None = None
    switches: dict[str, Any] | None = None  # the trainer's resolved speed switches
    note: str = ""


class Memory:
    """Bytes in use and their peak since `reset`: the CUDA allocator's, else the Linux resident set (or None)."""

    STATUS, CLEAR = Path("/proc/self/status"), Path("/proc/self/clear_refs")

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        self.rss = self.STATUS.exists() and self.CLEAR.exists()

    def _status(self, key: str) -> int:
        return 1024 * int(re.search(rf"{key}:\s+(\d+) kB", self.STATUS.read_text()).group(1))

    def reset(self) -> int | None:
        """Start a new peak here; returns the bytes in use now (None where unknown)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return torch.cuda.memory_allocated(self.device)
        if not self.rss:
            return None
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS, so RSS counts live bytes
        self.CLEAR.write_text("5")  # reset VmHWM to the current RSS
        return self._status("VmRSS")

    def peak(self) -> int | None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        return self._status("VmHWM") if self.rss else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text()) if cpuinfo.exists() else None
    name = found.group(1).strip() if found else platform.processor() or platform.machine()
    return f"{name} ({torch.get_num_threads()} threads)"


def compose_case(cfg: DictConfig, stage: str, overrides: list[str]) -> DictConfig:
    """The config `nasctl <stage>` would run with the bench's, the case's and the variant's overrides."""
    args = [*cfg[stage], *overrides, *([f"dataset={cfg.dataset.name}"] if cfg.dataset else []), f"trainer.device={cfg.device}"]
    try:
        return compose(config_name=stage, overrides=args)
    except (HydraException, OmegaConfBaseException) as exc:
        raise NasctlError(f"bench: cannot compose `nasctl {stage} {' '.join(args)}`: {exc}".replace("\n", " ")) from None


def unavailable(stage: str, overrides: list[str]) -> str:
    """Why a case cannot run here (a stabilizer not registered in this checkout), or ''."""
    if stage == "retrain":
        return ""
    from nasctl.stabilizers import STABILIZERS

    for o in overrides:
        if o.startswith("stabilizer="):
            names = [n.strip() for n in o.split("=", 1)[1].strip("[]").split(",")]
            absent = [n for n in names if n not in STABILIZERS and n != "none"]
            if absent:
                return f"stabilizer {', '.join(absent)} is not registered"
    return ""


def build(stage: str, ccfg: DictConfig, trainer: Trainer, run: Run) -> tuple[Loop, int]:
    """The stage's loop, built as `nasctl <stage>` builds it, and how many images one step trains on (1 for search)."""
    from nasctl.retrain import RetrainLoop
    from nasctl.search.stage import SearchLoop

    cls = {"search": SearchLoop, "retrain": RetrainLoop}[stage]
    seed_everything(ccfg.seed)
    loop = build_loop(cls, ccfg, trainer, run, cls.prepare(ccfg, run.path, resume=False))
    return loop, 1 if stage == "search" else ccfg.retrain.batch_size


def endless(loop: Loop) -> Iterator[Any]:
    """The batches of epoch 0, over and over."""
    while True:
        yield from loop.batches(0, 0)


@dataclass
class Timed:
    """A built variant: its trainer, loop and batch stream."""

    trainer: Trainer
    loop: Loop
    batches: Iterator[Any]
    per_step: int  # images per step (retrain) or 1 (search)

    @classmethod
    def make(cls, stage: str, trainer: Trainer, ccfg: DictConfig, run: Run) -> Timed:
        loop, per_step = build(stage, ccfg, trainer, run)
        return cls(trainer, loop, endless(loop), per_step)

    @property
    def device(self) -> torch.device:
        return self.trainer.device

    def step(self, i: int) -> None:
        """One step, its data included."""
        self.trainer.begin_step()
        self.loop.step(next(self.batches), 0, i)


def wall_seconds(t: Timed | Original, steps: int) -> float:
    """Wall seconds of `steps` of a built variant's steps, synchronised with its device."""
    sync = torch.cuda.synchronize if t.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for i in range(steps):
        t.step(i)
    sync()
    return time.perf_counter() - t0


def held_since(memory: Memory, start: int | None) -> int | None:
    """Bytes a built variant holds: in use now minus in use at `start` (None where unknown)."""
    after = memory.reset()
    return after - start if start is not None and after is not None else None


def failed(exc: BaseException) -> str:
    """The note of a variant whose step raised: a bug to report, not a reason to lose the other rows."""
    return f"failed: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def bench_case(cfg: DictConfig, name: str, case: DictConfig, run: Run, memory: Memory) -> list[Result]:
    """Build, warm up and time every variant of one case; ratios against the eager baseline."""
    unit = "steps/s" if case.stage == "search" else "img/s"
    if reason := unavailable(case.stage, list(case.overrides)):
        return [Result(name, "-", unit, note=f"skipped: {reason}")]
    configs = {v: compose_case(cfg, case.stage, [*case.overrides, *cfg.baseline, *o]) for v, o in cfg.variants.items()}
    # Build the baseline, take a step and drop it: imports, caches and lazy initialisation are then
    # paid for, and not charged to the first variant's time and memory.
    wall_seconds(Timed.make(case.stage, Trainer(configs[BASELINE].trainer, run), configs[BASELINE], run), 1)
    results: dict[str, Result] = {}
    built: dict[str, Timed | Original] = {}
    static: dict[str, int | None] = {}  # bytes a variant's loop holds after its warm-up
    twins: dict[str, str] = {}  # variant -> the built variant with the same resolved switches
    for variant, ccfg in configs.items():
        if variant in cfg.skip:
            continue
        try:
            trainer = Trainer(ccfg.trainer, run)
        except NasctlError as exc:  # e.g. CUDA graphs asked for on a CPU
            results[variant] = Result(name, variant, unit, note=f"skipped: {exc}")
            continue
        res = results[variant] = Result(name, variant, unit, switches={k: trainer.cfg[k] for k in SWITCHES})
        if twin := next((v for v in built if results[v].switches == res.switches), None):
            twins[variant], res.note = twin, f"= {twin} (same switches)"
            continue
        log.print(f"bench {name}: building and warming up {variant}")
        start = memory.reset()
        try:
            t = Timed.make(case.stage, trainer, ccfg, run)
            res.warmup_s = wall_seconds(t, cfg.warmup)
        except Exception as exc:  # noqa: BLE001  (a row that says why, and the other variants still run)
            res.note = failed(exc)
            continue
        built[variant] = t
        static[variant] = held_since(memory, start)
    if cfg.original and case.stage == "search" and BASELINE in built:
        if reason := why_not(configs[BASELINE]):
            results["original"] = Result(name, "original", unit, note=f"skipped: {reason}")
        else:
            log.print(f"bench {name}: building and warming up the original code ({cfg.original})")
            start = memory.reset()
            built["original"] = Original(cfg.original, configs[BASELINE], built[BASELINE].device, built[BASELINE].batches)
            results["original"] = Result(name, "original", unit, warmup_s=wall_seconds(built["original"], cfg.warmup))
            static["original"] = held_since(memory, start)
    names = list(built)
    times: dict[str, list[float]] = {v: [] for v in names}
    log.print(f"bench {name}: timing {', '.join(names)} ({cfg.rounds} rounds of {cfg.steps} steps)")
    for r in range(cfg.rounds if names else 0):
        for variant in names[r % len(names) :] + names[: r % len(names)]:
            if results[variant].note:  # failed in an earlier round
                continue
            before = memory.reset() if r == 0 else None  # round 0 also gives the peak a step adds
            try:
                times[variant].append(wall_seconds(built[variant], cfg.steps))
            except Exception as exc:  # noqa: BLE001
                results[variant].note, times[variant] = failed(exc), []
                continue
            peak = memory.peak()
            if None not in (static[variant], before, peak):
                results[variant].memory_mib = (static[variant] + peak - before) / 2**20
    for variant, ts in times.items():
        if ts:
            results[variant].rate = cfg.steps * built[variant].per_step / statistics.median(ts)
    for variant, twin in twins.items():
        for key in ("rate", "warmup_s", "memory_mib"):
            setattr(results[variant], key, getattr(results[twin], key))
    base = results.get(BASELINE)
    for res in results.values():
        if res.rate is not None and base is not None and base.rate:
            res.ratio = res.rate / base.rate
    if (orig := results.get("original")) and orig.rate:
        orig.note = "quark0/darts's own step; nasctl's rates over it: " + ", ".join(f"{v} {r.rate / orig.rate:.2f}x" for v, r in results.items() if r.rate and v != "original")
    return list(results.values())


def check(cfg: DictConfig) -> None:
    if cfg.warmup < 0 or cfg.steps < 1 or cfg.rounds < 1:
        raise NasctlError(f"bench needs steps >= 1, rounds >= 1 and warmup >= 0; got {cfg.steps}, {cfg.rounds}, {cfg.warmup}.")
    if BASELINE not in cfg.variants or BASELINE in cfg.skip:
        raise NasctlError(f"bench.variants must hold `{BASELINE}` (the baseline of every ratio), and skip must not name it.")
    for name, case in cfg.cases.items():
        if case.stage not in STAGES:
            raise NasctlError(f"bench case {name}: stage={case.stage!r} is not one of {', '.join(STAGES)}.")
    known = {*cfg.cases, *cfg.variants}
    if unknown := [s for s in cfg.skip if s not in known]:
        raise NasctlError(f"bench skip={list(unknown)}: not a case or variant name ({', '.join(sorted(known))}).")


SWITCH_LABELS = {"tf32": "tf32", "channels_last": "NHWC", "fused_optimizer": "fused", "compile": "compile", "cuda_graphs": "graphs"}


def describe(switches: dict[str, Any] | None) -> str:
    """e.g. `bf16 NHWC fused`: the precision and the switches that are on."""
    if not switches:
        return ""
    on = (short if switches[k] is True else str(switches[k]) for k, short in SWITCH_LABELS.items() if switches[k])
    return " ".join([switches["precision"], *on])  # a switch with a value of its own (compile=regional) shows it


def print_table(report: dict[str, Any]) -> None:
    table = Table(title=f"nasctl bench: {report['device_name']}, torch {report['torch']}")
    for col in ("case", "variant", "switches", "rate", "unit", "× eager", "warm-up s", "MiB", "note"):
        table.add_column(col, justify="right" if col in ("rate", "× eager", "warm-up s", "MiB") else "left")

    def num(x: float | None, fmt: str, missing: str = "-") -> str:
        return missing if x is None else format(x, fmt)

    for r in report["results"]:
        table.add_row(
            r["case"], r["variant"], describe(r["switches"]), num(r["rate"], ".3g"), r["unit"], num(r["ratio"], ".2f"),
            num(r["warmup_s"], ".1f"), num(r["memory_mib"], ".0f", "n/a"), r["note"],
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # a log or a pipe gets every column


def run_bench(cfg: DictConfig) -> dict[str, Any]:
    """Time every case under every variant, print the table and write `cfg.output`; returns the report."""
    check(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    memory = Memory(device)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="nasctl-bench-") as tmp:
        run = Run(Path(tmp))  # loops need a run; nothing of it is kept
        for name, case in cfg.cases.items():
            if name not in cfg.skip:
                results += bench_case(cfg, name, case, run, memory)
    report = {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": OmegaConf.to_container(cfg, resolve=True),
        "results": [asdict(r) for r in results],
    }
    print_table(report)
    atomic_write(Path(cfg.output), json.dumps(report, indent=2).encode())
    log.print(f"wrote {cfg.output}")
    return report
