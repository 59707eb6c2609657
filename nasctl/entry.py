"""Hydra entry points, one per stage: compose `conf/<stage>.yaml` and call the stage function.

Each is a real `@hydra.main`, so multirun, sweepers, launchers, `--cfg` and
`hydra.run.dir=` work unchanged. User errors end as one paragraph and exit status 2; in a
multirun a failed job does not stop the others, and the sweep exits 1 at the end.
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.console import Console
from rich.text import Text

from nasctl import conf_dir
from nasctl.config import check_ranges, register_schemas
from nasctl.errors import NasctlError
from nasctl.store import find_runs
from nasctl.train import distributed

EXIT_USER_ERROR, EXIT_INTERRUPTED = 2, 3


def stage_run_dir(run_root: str, kind: str, resume: Any) -> str:
    """`${nasctl_run_dir:}`: a fresh unique run directory, or the one `resume=` points at; under torchrun,
    rank 0's on every rank."""
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
        hint = " (a run stopped before it wrote its manifest has nothing to resume: start it again)" \
            if Path(str(resume)).is_dir() else ""
        raise NasctlError(f"resume={resume}: not a nasctl run directory (no manifest.json){hint}.")
    return str(resume)


if not OmegaConf.has_resolver("nasctl_run_dir"):
    OmegaConf.register_new_resolver("nasctl_run_dir", stage_run_dir, use_cache=False)
register_schemas()
console = Console(stderr=True)


DEBUG_HINT = "(`nasctl --debug ...` shows the traceback)"


def report_error(exc: BaseException | str, hint: bool = True) -> None:
    """Print an error as one paragraph, literally (no markup), pointing to `--debug` for the traceback."""
    text = " ".join(str(exc).split())
    console.print(Text.assemble(("error:", "bold red"), f" {text}", f" {DEBUG_HINT}" if hint else ""), soft_wrap=True)


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
            check_ranges(cfg)
            return fn(cfg)
        except Interrupted as exc:  # a signal stops the whole sweep, not just this job
            report_error(exc, hint=False)
            raise SystemExit(EXIT_INTERRUPTED) from None
        except NasctlError as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            fail(exc, EXIT_USER_ERROR)
        except Exception as exc:
            if os.environ.get("NASCTL_DEBUG"):
                raise
            fail(f"internal error: {type(exc).__name__}: {exc}", 1)

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


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or while handling."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        yield exc
        exc = exc.__cause__ or exc.__context__


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n")[0]


def explain(exc: BaseException, stage: str) -> str | None:
    """nasctl's sentence for an error raised while Hydra reads the command line or prepares the run directory;
    None for an error that is not the user's (an internal error)."""
    for cause in _causes(exc):
        if isinstance(cause, NasctlError):
            return str(cause)
    if isinstance(exc, OverrideParseException):
        lines = [x.strip() for x in exc.message.splitlines() if x.strip() and not x.strip().startswith(("^", "See "))]
        reason = lines[-1] if len(lines) > 1 else "a character Hydra's override grammar does not allow here"
        return (f"cannot read the override {exc.override!r}: {reason} (an override is key=value, group=option, "
                "+key=value or ~key). Quote a value that holds spaces, brackets, "
                "parentheses, quotes or `|`: key='value', inside the shell's quotes \"key='value'\" (genotype= "
                "takes an NB201 arch string or a Genotype(...) literal as printed, unquoted).")
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, choice = exc.missing_cfg_file.rpartition("/")
        return f"{group}={choice}: no such option; {group} is one of {', '.join(exc.options)}."
    if isinstance(exc, ConfigCompositionException):
        head = _first_line(exc)
        cause = exc.__cause__
        if head.startswith("Ambiguous value for argument "):
            override = head.removeprefix("Ambiguous value for argument ").strip("'")
            return (f"{override}: a value with commas is a sweep; add -m to run one job per value, or write "
                    "key=[a,b] for a list and key='a,b' for a string.")
        if head.startswith("Error merging override ") and isinstance(cause, OmegaConfBaseException):
            return f"{head.removeprefix('Error merging override ')}: {_first_line(cause)}."
        if head.startswith("Could not override "):  # Hydra's advice, `+key=value`, names the override
            key = head.split("'")[1]
            override = str(exc).rpartition(" use +")[2].strip() or key
            what = "config group" if "defaults list" in head else "key"
            siblings = [str(k) for k in getattr(cause, "parent_node", None) or []]
            near = difflib.get_close_matches(str(getattr(cause, "key", "")), siblings, 1)
            parent = key.rpartition(".")[0]
            hint = f" (did you mean {parent + '.' if parent else ''}{near[0]}?)" if near else ""
            return (f"{override}: nasctl {stage} has no {what} {key!r}{hint}; `nasctl {stage} --help` lists its "
                    f"config groups and `nasctl {stage} --cfg job` its keys.")
        return head
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        return f"{key}: {_first_line(exc)}" if key else _first_line(exc)
    if isinstance(exc, OSError):
        return (f"cannot create or write {exc.filename or 'the run directory'}: {exc.strerror or exc}; choose a "
                "writable place with hydra.run.dir=<dir> (or paths.run_root=<dir>).")
    if isinstance(exc, ValueError):  # Hydra's own flag checks, e.g. `-m` together with `--cfg`
        return str(exc)
    return None


def main(stage: str, args: list[str]) -> None:
    """Run a stage's Hydra entry with `args` as its command line (argv is restored after).

    Hydra's own errors (override grammar, types, missing options, the run directory) come back here
    as exceptions (HYDRA_FULL_ERROR) and end in nasctl's one paragraph with exit status 2.
    """
    if distributed.launched():
        if stage not in DISTRIBUTED:
            report_error(f"nasctl {stage} runs as one process; only {', '.join(DISTRIBUTED)} runs under torchrun "
                         "(a sweep's jobs are separate processes: use -m with a launcher).")
            raise SystemExit(EXIT_USER_ERROR)
        distributed.setup()
        args = [*args, *distributed.hydra_args()]
    saved, sys.argv = sys.argv, [f"nasctl {stage}", *args]
    saved_env = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # raise instead of printing Hydra's advice
    try:
        ENTRIES[stage]()
        distributed.teardown()
    except JobFailed as exc:  # a sweep whose failed jobs have each printed their error
        if os.environ.get("NASCTL_DEBUG"):
            raise
        report_error(exc, hint=False)
        raise SystemExit(1) from None
    except Exception as exc:
        if os.environ.get("NASCTL_DEBUG"):
            raise
        message = explain(exc, stage)
        report_error(message or f"internal error: {type(exc).__name__}: {exc}")
        raise SystemExit(EXIT_USER_ERROR if message else 1) from None
    finally:
        distributed.teardown(clean=False)  # a no-op once left; after an error, no barrier that could hang
        sys.argv = saved
        if saved_env is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_env
