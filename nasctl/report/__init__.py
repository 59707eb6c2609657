"""`nasctl report`: one table and a few figures over a sweep (or one search run).

Writes into `<dir>/report/`: report.csv (one row per run), summary.csv (mean ± std per method),
paired.csv (each run minus the `baseline` method's run of the same seed), report.md (the tables, the
paired differences' mean ± std, and the figures), curves/<metric>.png, alphas/<run>-<cell>.png and
cells/<run>.png.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.console import Console

from nasctl.errors import NasctlError
from nasctl.report import cells, plots
from nasctl.report.table import (
    PAIRED_COLUMNS,
    PAIRED_SUMMARY_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    SearchRun,
    collect,
    markdown,
    paired,
    rich_table,
    rows,
    summary,
    write_csv,
)
from nasctl.store import find_runs


def resolve_dir(spec: str, run_root: str) -> Path:
    """`latest` = the sweep of the newest search run (or that run alone); else the directory given."""
    if spec != "latest":
        return Path(spec)
    runs = find_runs(run_root, "search")
    if not runs:
        raise NasctlError(f"dir=latest: no search run under {Path(run_root, 'search')}; run `nasctl search` first.")
    newest = runs[-1].path
    return newest.parent if (newest.parent / "multirun.yaml").is_file() else newest


def figures(runs: list[SearchRun], curves: list[str], out: Path) -> dict[str, list[Path]]:
    """All PNGs, by section."""
    made = {"curves": [p for k in curves if (p := plots.curves(runs, k, out / "curves" / f"{k}.png"))]}
    made["alpha trajectories"] = [p for r in runs for p in plots.alpha_trajectories(r, out / "alphas")]
    made["derived cells"] = [cells.draw(r.genotype, out / "cells" / f"{r.label}.png", r.label)
                             for r in runs if r.genotype is not None]
    return made


def run_report(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Collect the search runs under `cfg.dir`, print the tables, write CSV/Markdown/PNGs; returns the tables."""
    console = console or Console(width=None if sys.stdout.isatty() else 240)  # a log file gets whole rows
    root = resolve_dir(cfg.dir, cfg.paths.run_root)
    if not root.is_dir():
        raise NasctlError(f"dir={cfg.dir}: {root} is not a directory.")
    runs = collect(root)
    if not runs:
        raise NasctlError(f"dir={cfg.dir}: no search run (a directory with a search manifest.json) under {root}.")
    out = Path(cfg.out) if cfg.out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    per_run = rows(runs)
    per_method = summary(per_run)
    console.print(rich_table(f"search runs in {root}", RUN_COLUMNS, per_run))
    console.print(rich_table("mean ± std over seeds", SUMMARY_COLUMNS, per_method))
    per_seed = paired(per_run, cfg.baseline) if cfg.baseline else []
    per_pair = summary(per_seed)
    if per_seed:
        console.print(rich_table(f"minus {cfg.baseline}, same seed: mean ± std", PAIRED_SUMMARY_COLUMNS, per_pair))
    notes = [f"- {r.label}: {row['reason']}" for r, row in zip(runs, per_run) if row["reason"]]  # early stops, failures
    for line in notes:
        console.print(line, markup=False, highlight=False)
    write_csv(out / "report.csv", per_run)
    write_csv(out / "summary.csv", per_method)
    if per_seed:
        write_csv(out / "paired.csv", per_seed)
    made = figures(runs, list(cfg.curves), out) if cfg.plots else {}
    md = [f"# Search report: {root}\n", "## Mean ± std over seeds\n", markdown(SUMMARY_COLUMNS, per_method),
          "## Runs\n", markdown(RUN_COLUMNS, per_run)]
    if per_seed:
        md += [f"## Paired with {cfg.baseline} (each run minus {cfg.baseline}'s run of the same seed)\n",
               markdown(PAIRED_SUMMARY_COLUMNS, per_pair), markdown(PAIRED_COLUMNS, per_seed)]
    md += ["## Why runs ended\n", "\n".join(notes) + "\n"] if notes else []
    for section, paths in made.items():
        md += [f"## {section.capitalize()}\n"] + [f"![{p.stem}]({p.relative_to(out).as_posix()})\n" for p in paths]
    (out / "report.md").write_text("\n".join(md))
    console.print(f"wrote {out}/report.md, report.csv, summary.csv and {sum(map(len, made.values()))} figures")
    return {"dir": str(root), "out": str(out), "runs": per_run, "summary": per_method, "paired": per_seed}
