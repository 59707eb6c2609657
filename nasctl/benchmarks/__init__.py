"""Tabular benchmarks: the trained accuracy of a derived architecture, looked up (NAS-Bench-201)."""

from __future__ import annotations

from typing import Any

from nasctl.benchmarks.nb201 import Nb201Table, load_table

__all__ = ["Nb201Table", "load_table", "table_for"]


def table_for(genotype: type, cfg: Any) -> Nb201Table | None:
    """The table that scores genotypes of type `genotype` when `cfg` (the `paths` config) names one, else None."""
    key = genotype.benchmark
    return load_table(cfg[key]) if key is not None and cfg[key] else None
