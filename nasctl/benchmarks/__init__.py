"""Tabular benchmarks: the trained accuracy of a derived architecture, looked up (NAS-Bench-201)."""

from __future__ import annotations

from typing import Any

from nasctl.benchmarks.nb201 import DATASETS, Nb201Table, load_table

__all__ = ["DATASETS", "Nb201Table", "load_table", "table_for"]


def table_for(genotype_kind: str, cfg: Any) -> Nb201Table | None:
    """The lookup table for genotypes of `genotype_kind` when `cfg` (a BenchmarkConfig) names one, else None."""
    return load_table(cfg.nb201) if genotype_kind == "nb201" and cfg.nb201 else None
