"""The report's numbers: one row per search run, mean ± std per method over seeds, and each method paired
seed by seed with a baseline method."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from rich.table import Table

from nasctl import genotype as G
from nasctl.store import Run, runs_below


@dataclass
class SearchRun:
    """A search run as the report sees it."""

    run: Run
    label: str  # unique, file-name safe
    method: str  # the relaxation (unless darts) and the stabilizer names joined with +, e.g. gdas+none
    seed: int
    space: str
    dataset: str
    status: str
    metrics: list[dict[str, Any]]
    genotype: G.Genotype | None
    early_stop: dict[str, Any] | None = None  # manifest.json's `early_stop` when a stabilizer ended the search

    def final(self, key: str) -> Any:
        """The last value of a metrics.jsonl key up to the epoch whose genotype the run kept (None if never logged)."""
        kept = self.early_stop["genotype_epoch"] if self.early_stop else None
        return next((m[key] for m in reversed(self.metrics)
                     if m.get(key) is not None and (kept is None or m.get("epoch", 0) <= kept)), None)

    @property
    def stopped(self) -> str | None:
        """`e<triggered>→e<kept>` for an early-stopped run."""
        return f"e{self.early_stop['triggered_epoch']}→e{self.early_stop['genotype_epoch']}" if self.early_stop else None


def collect(root: Path) -> list[SearchRun]:
    """Every search run at or below `root`, sorted by space, dataset, method and seed."""
    runs = []
    for run, manifest in runs_below(root, "search"):
        cfg = run.config
        relaxation = OmegaConf.select(cfg, "relaxation.name", default="darts")
        method = "+".join([*([relaxation] if relaxation != "darts" else []), *(cfg.stabilizer or {"none": None})])
        where = run.path.relative_to(root).as_posix() if run.path != root else run.path.name
        g = run.path / "genotype.json"
        runs.append(SearchRun(
            run=run, label=f"{where.replace('/', '_')}-{method}-seed{manifest['seed']}", method=method,
            seed=manifest["seed"], space=cfg.space.name, dataset=cfg.dataset.name, status=manifest.get("status", "?"),
            metrics=run.metrics(), genotype=G.load(g) if g.is_file() else None, early_stop=manifest.get("early_stop"),
        ))
    return sorted(runs, key=lambda r: (r.space, r.dataset, r.method, r.seed, r.label))


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    fmt: Callable[[Any], str] = str


def num(spec: str) -> Callable[[Any], str]:
    return lambda v: format(v, spec)


METRICS = (
    Column("val_acc", "val acc", num(".2f")),
    Column("skip_count", "skips", num(".3g")),
    Column("hessian_eig", "eig", num(".3g")),
    Column("bench_cifar10", "NB201 C10", num(".2f")),
    Column("bench_cifar100", "NB201 C100", num(".2f")),
    Column("bench_imagenet16_120", "NB201 IN16", num(".2f")),
)
RUN_COLUMNS = (
    Column("method", "method"), Column("seed", "seed"), Column("space", "space"), Column("dataset", "dataset"),
    Column("status", "status"), Column("stopped", "stopped (kept)"), *METRICS,
    Column("genotype", "genotype (normal cell / NB201 nodes)"),
    Column("time", "search s", num(".0f")),
)
GROUP = ("method", "space", "dataset")
SUMMARY_COLUMNS = (*RUN_COLUMNS[:1], *RUN_COLUMNS[2:4], Column("runs", "runs"), *METRICS, RUN_COLUMNS[-1])
SIGNED = {"val_acc": "+.2f", "skip_count": "+.3g", "hessian_eig": "+.3g"}  # a difference shows its sign; bench: +.2f
DELTAS = tuple(Column(c.key, f"Δ {c.header}", num(SIGNED.get(c.key, "+.2f"))) for c in METRICS)
PAIRED_COLUMNS = (*RUN_COLUMNS[:4], *DELTAS)
PAIRED_SUMMARY_COLUMNS = (*SUMMARY_COLUMNS[:3], Column("runs", "pairs"), *DELTAS)


def rows(runs: list[SearchRun]) -> list[dict[str, Any]]:
    """One dict per run: identity, final diagnostics, short genotype, summed epoch time (s)."""
    return [
        {"method": r.method, "seed": r.seed, "space": r.space, "dataset": r.dataset,
         "status": None if r.status == "completed" else r.status, "stopped": r.stopped,
         **{c.key: r.final(c.key) for c in METRICS},
         "genotype": r.genotype.short() if r.genotype else None, "time": sum(m.get("epoch_time", 0.0) for m in r.metrics),
         "full_genotype": str(r.genotype) if r.genotype else None, "path": str(r.run.path.resolve()),
         "reason": r.run.manifest.get("reason")}
        for r in runs
    ]


def summary(run_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, space, dataset): the run count and (mean, std) of each numeric column over its runs."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in run_rows:
        groups.setdefault(tuple(row[k] for k in GROUP), []).append(row)
    out = []
    for key, members in groups.items():
        row: dict[str, Any] = {**dict(zip(GROUP, key)), "runs": len(members)}
        for c in (*METRICS, RUN_COLUMNS[-1]):
            vals = np.array([m[c.key] for m in members if m[c.key] is not None], dtype=float)
            row[c.key] = (vals.mean(), vals.std(ddof=1) if len(vals) > 1 else None) if len(vals) else None
        out.append(row)
    return out


def paired(run_rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Each completed run minus the completed `baseline` run of the same space, dataset and seed, per metric."""
    base = {(r["space"], r["dataset"], r["seed"]): r for r in run_rows if r["method"] == baseline and r["status"] is None}
    out = []
    for r in run_rows:
        b = base.get((r["space"], r["dataset"], r["seed"]))
        if r["method"] == baseline or r["status"] is not None or b is None:
            continue
        out.append({**{k: r[k] for k in ("method", "seed", "space", "dataset")}, "time": None,
                    **{c.key: None if r[c.key] is None or b[c.key] is None else r[c.key] - b[c.key] for c in METRICS}})
    return out


def cell(column: Column, value: Any) -> str:
    """A value as shown: `mean ± std` for summary pairs, blank for missing."""
    if value is None:
        return ""
    if isinstance(value, tuple):
        mean, std = value
        return column.fmt(mean) + ("" if std is None else f" ± {column.fmt(std).lstrip('+')}")
    return column.fmt(value)


def shown(columns: tuple[Column, ...], table: list[dict[str, Any]]) -> list[Column]:
    """The columns that have a value in some row (no empty eigenvalue or benchmark columns)."""
    return [c for c in columns if any(r.get(c.key) is not None for r in table)]


def rich_table(title: str, columns: tuple[Column, ...], table: list[dict[str, Any]]) -> Table:
    out = Table(title=title)
    cols = shown(columns, table)
    for c in cols:
        out.add_column(c.header, overflow="fold")
    for r in table:
        out.add_row(*(cell(c, r.get(c.key)) for c in cols))
    return out


def markdown(columns: tuple[Column, ...], table: list[dict[str, Any]]) -> str:
    cols = shown(columns, table)
    lines = ["| " + " | ".join(c.header for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(c, r.get(c.key)) for c in cols) + " |" for r in table]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: list[dict[str, Any]]) -> None:
    """Raw values (summary pairs as `<key>_mean`, `<key>_std`) for pandas and spreadsheets."""
    flat = []
    for r in table:
        row: dict[str, Any] = {}
        for k, v in r.items():
            if isinstance(v, tuple):
                row[f"{k}_mean"], row[f"{k}_std"] = v
            else:
                row[k] = v
        flat.append(row)
    keys = list(dict.fromkeys(k for row in flat for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(flat)
