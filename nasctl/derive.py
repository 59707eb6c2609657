"""`nasctl derive`: turn a search run's architecture logits into a genotype and show it."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from nasctl import genotype as G
from nasctl.benchmarks import table_for
from nasctl.errors import NasctlError
from nasctl.relaxations import build_relaxation
from nasctl.selection import SELECTIONS
from nasctl.spaces import space_config
from nasctl.store import Run, atomic_write, resolve_run


def alphas_at(run: Run, epoch: int | None) -> tuple[dict[str, torch.Tensor], int]:
    """The architecture parameters recorded after `epoch` (default: the last recorded epoch)."""
    path = run.path / "alphas.npz"
    if not path.is_file():
        raise NasctlError(f"{run.path} has no alphas.npz yet: the search has not finished an epoch.")
    with np.load(path) as z:
        history = {k: z[k] for k in z.files}
    n = len(next(iter(history.values())))
    e = n - 1 if epoch is None else epoch
    if not 0 <= e < n:
        raise NasctlError(f"epoch={epoch} is out of range: {run.path} recorded epochs 0..{n - 1}.")
    return {k: torch.from_numpy(v[e]) for k, v in history.items()}, e


def genotype_table(g: G.Genotype) -> Table:
    columns, rows = g.rows()
    table = Table(title=f"genotype ({g.space})")
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def benchmark_table(accuracies: dict[str, float]) -> Table:
    table = Table(title="NAS-Bench-201 test accuracy (%)")
    for dataset in accuracies:
        table.add_column(dataset, justify="right")
    table.add_row(*(f"{a:.2f}" for a in accuracies.values()))
    return table


def run_derive(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Derive, save and print the genotype of a search run; returns what was shown."""
    console = console or Console()
    run = resolve_run(cfg.run, cfg.paths.run_root, "search")
    space, scfg = space_config(run.config.space)
    bench = table_for(space.genotype, cfg.paths)
    if cfg.selection.name == "argmax":
        kept = (run.manifest.get("early_stop") or {}).get("genotype_epoch")  # DARTS-ES: the epoch it kept
        params, epoch = alphas_at(run, cfg.epoch if cfg.epoch is not None else kept)
        relaxation = build_relaxation(run.config.get("relaxation"), space.node_edges(scfg))
        genotype = space.derive(relaxation.scores(params), scfg)
        name = "genotype.json" if cfg.epoch is None else f"genotype_epoch{epoch}.json"
    else:
        if cfg.epoch is not None:
            raise NasctlError(f"epoch={cfg.epoch} applies to selection=argmax only: selection={cfg.selection.name} "
                              "selects from the trained supernet at the end of the search.")
        rule = SELECTIONS.get(cfg.selection.name)
        genotype, name, epoch = rule.select(run, space, scfg, cfg.selection, console), rule.output, None
    atomic_write(run.path / name, G.dumps(genotype).encode())
    console.print(genotype_table(genotype))
    console.print(str(genotype), soft_wrap=True, highlight=False, markup=False)
    console.print(f"saved {run.path / name} ({f'epoch {epoch}' if epoch is not None else cfg.selection.name})")
    result = {"run": str(run.path), "epoch": epoch, "selection": cfg.selection.name, "genotype": genotype.to_dict(),
              "path": str(run.path / name)}
    if bench is not None:
        result["benchmark"] = bench.accuracies(str(genotype))
        console.print(benchmark_table(result["benchmark"]))
        console.print(f"(after the benchmark's 200-epoch training; looked up in {bench.path})", soft_wrap=True)
    elif space.genotype.benchmark is not None:
        console.print(f"Benchmark accuracies: set paths.{space.genotype.benchmark}=<table.csv> "
                      "(or $NASCTL_NB201) to look them up.")
    return result
