"""Training progress: the rich bar in a terminal; outside one (a log file, a SLURM .out, a pipe) whole lines."""

from __future__ import annotations

import datetime
import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class LineProgress:
    """Progress as one complete line per update, never cut or redrawn: what a log file can read."""

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: int, completed: int = 0, stats: str = "") -> int:
        self.tasks.append({"description": description, "total": total, "completed": completed, "start": time.time()})
        return len(self.tasks) - 1

    def update(self, task: int, completed: int | None = None, description: str | None = None, stats: str = "") -> None:
        """A step update prints `<label> e/E step s/n <stats> <elapsed>`; the epoch's last (a new description) `done`."""
        t = self.tasks[task]
        t["completed"] = t["completed"] if completed is None else completed
        where = "done" if description else f"step {t['completed']}/{t['total']}"
        t["description"] = description or t["description"]
        elapsed = datetime.timedelta(seconds=round(time.time() - t["start"]))
        print(f"{t['description']} {where} {stats} {elapsed}".replace("  ", " "), file=sys.stdout, flush=True)


def progress_display(enabled: bool, console: Console | None = None) -> Progress | LineProgress:
    """The rich bar where stdout is a terminal, whole lines elsewhere; nothing when not `enabled`."""
    console = console or Console()
    if enabled and not console.is_terminal:
        return LineProgress()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
               TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, disable=not enabled)
