"""Hydra entry points, one per stage: compose `conf/<stage>.yaml` and call the stage function.

Each is a real `@hydra.main`, so multirun, sweepers, launchers, `--cfg` and
`hydra.run.dir=` work unchanged. User errors end as one paragraph and exit status 2.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from nasctl import conf_dir
from nasctl.config import register_schemas
from nasctl.errors import NasctlError
from nasctl.store import find_runs

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 3


def new_run_dir(run_root: str, kind: str, resume: Any) -> str:
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


def guarded(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Turn exceptions into a one-paragraph message and an exit status (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(cfg: DictConfig) -> Any:
        from nasctl.train import Interrupted

        try:
            return fn(cfg)
        except Interrupted as exc:
            report_error(exc)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except NasctlError as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            report_error(exc)
            raise SystemExit(EXIT_USER_ERROR) from None
        except Exception as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            report_error(f"internal error: {type(exc).__name__}: {exc} (run with `nasctl --debug ...` for the traceback)")
            raise SystemExit(1) from None

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


ENTRIES: dict[str, Callable[[], None]] = {"search": search, "derive": derive}


def main(stage: str, args: list[str]) -> None:
    """Run a stage's Hydra entry with `args` as its command line (argv is restored after)."""
    saved, sys.argv = sys.argv, [f"nasctl {stage}", *args]
    try:
        ENTRIES[stage]()
    finally:
        sys.argv = saved
