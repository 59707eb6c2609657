"""The selection protocol: a registered rule turns a finished search run into a genotype."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from nasctl.genotype import Genotype
from nasctl.registry import Registry
from nasctl.spaces import Space
from nasctl.store import Run

# (search run, its space, the space config, the selection config node, console) -> genotype
Select = Callable[[Run, Space, Any, Any, Console], Genotype]


@dataclass(frozen=True)
class Selection:
    select: Select
    output: str  # the file it writes in the search run directory


SELECTIONS: Registry[Selection] = Registry("selection")

