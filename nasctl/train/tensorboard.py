"""TensorBoard event files in the run directory, so `tensorboard --logdir runs` shows every run.

Each metrics.jsonl record (one per epoch) becomes scalars at step = epoch; a resumed run
appends a new event file to the same directory, which TensorBoard merges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def scalars(path: Path, enabled: bool) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function that writes a record's numbers as scalars (does nothing when disabled)."""
    if not enabled:
        yield lambda record: None
        return
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(path))

    def log(record: dict[str, Any]) -> None:
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                writer.add_scalar(key, value, record["epoch"])
        writer.flush()

    try:
        yield log
    finally:
        writer.close()
