"""Hydra entry points, one per stage: compose `conf/<stage>.yaml` and call the stage function.

Each is a real `@hydra.main`, so multirun, sweepers, launchers, `--cfg` and
`hydra.run.dir=` work unchanged. User errors end as one paragraph and exit status 2; in a
multirun a failed job does not stop the others, and the sweep exits 1 at the end.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nasctl import conf_dir
from nasctl.config import register_schemas
from nasctl.errors import NasctlError
from nasctl.store import find_runs
from nasctl.train import distributed

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 3


def new_run_dir(run_root: str, kind: str, resume: Any) -> str:
    """A fresh unique run directory, or the one `resume=` points at; under torchrun, rank 0's on every rank."""
    return distributed.from_main(pick_run_dir(run_root, kind, resume))


def pick_run_dir(run_root: str, kind: str, resume: Any) -> str:
    """A fresh unique run directory, or the one `resume=` points at (`true` = latest unfinished)."""
    if resume in (False, None, "false", "False"):
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return str(Path(run_root, kind, f"{stamp}-{uuid.uuid4().hex[:6]}"))
    if resume in (True, "true", "True"):
        unfinished = [r for r in find_runs(run_root, kind) if r.manifest.get("status") != "completed"]
        if not unfinished:
            raise NasctlError(f"resume=true: no unfinished {kind} run under {Path(run_root, kind)}.")
        return str(unfinished[-1].path)
    if not Path(str(resume), "manifest.json").is_file():
        raise NasctlError(f"resume={resume}: not a nasctl run directory (no manifest.json).")
    return str(resume)


if not OmegaConf.has_resolver("nasctl_run_dir"):
    OmegaConf.register_new_resolver("nasctl_run_dir", new_run_dir, use_cache=False)
register_schemas()
console = Console(stderr=True)


def report_error(exc: BaseException) -> None:
    """Print an error as one paragraph, naming the run directory where one exists."""
    console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)


class JobFailed(CompactHydraException):
    """One multirun job's error: Hydra records it, runs the other jobs, then prints it and exits 1."""


def fail(exc: BaseException | str, status: int) -> None:
    """Print the error; end the process, or in a multirun only this job (the other jobs go on)."""
    report_error(exc)
    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        raise JobFailed(f"job {hc.job.num} failed: {exc}")
    raise SystemExit(status)


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn exceptions into a one-paragraph message and an exit status (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        from nasctl.train import Interrupted

        try:
            return fn(cfg)
        except Interrupted as exc:  # a signal stops the whole sweep, not just this job
            report_error(exc)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except NasctlError as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            fail(exc, EXIT_USER_ERROR)
        except Exception as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc} (run with `nasctl --debug ...` for the traceback)", 1)

    return wrapper


def output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def task_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="search")
@guarded
def search(cfg: DictConfig) -> None:
    from nasctl.search.stage import run_search

    run_search(cfg, output_dir(), task_overrides())


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="derive")
@guarded
def derive(cfg: DictConfig) -> None:
    from nasctl.derive import run_derive

    run_derive(cfg)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="retrain")
@guarded
def retrain(cfg: DictConfig) -> None:
    from nasctl.retrain import run_retrain

    run_retrain(cfg, output_dir(), task_overrides())


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="evaluate")
@guarded
def evaluate(cfg: DictConfig) -> None:
    from nasctl.evaluate import run_evaluate

    run_evaluate(cfg)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="report")
@guarded
def report(cfg: DictConfig) -> None:
    from nasctl.report import run_report

    run_report(cfg)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="bench")
@guarded
def bench(cfg: DictConfig) -> None:
    from nasctl.bench import run_bench

    run_bench(cfg)


ENTRIES: dict[str, Callable[[], None]] = {
    "search": search, "derive": derive, "retrain": retrain, "evaluate": evaluate, "report": report, "bench": bench,
}


DISTRIBUTED = ("retrain",)  # stages that run as DDP ranks under torchrun


def main(stage: str, args: list[str]) -> None:
    """Run a stage's Hydra entry with `args` as its command line (argv is restored after)."""
    if distributed.launched():
        if stage not in DISTRIBUTED:
            report_error(f"nasctl {stage} runs as one process; only {', '.join(DISTRIBUTED)} runs under torchrun "
                         "(a sweep's jobs are separate processes: use -m with a launcher).")
            raise SystemExit(EXIT_USER_ERROR)
        distributed.setup()
        args = [*args, *distributed.hydra_args()]
    saved, sys.argv = sys.argv, [f"nasctl {stage}", *args]
    try:
        ENTRIES[stage]()
    except ValueError as exc:  # Hydra's own flag checks, e.g. `-m` together with `--cfg`
        if os.environ.get("NASCTL_DEBUG"):
            raise
        report_error(exc)
        raise SystemExit(EXIT_USER_ERROR) from None
    finally:
        sys.argv = saved
