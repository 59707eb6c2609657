"""Report figures (PNG, matplotlib without pyplot): alpha trajectories and per-method metric curves."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from matplotlib import rcParams
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from nasctl.relaxations import build_relaxation
from nasctl.report.table import SearchRun
from nasctl.spaces import space_config

OP_ORDER = ("none", "skip_connect", "max_pool_3x3", "avg_pool_3x3", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3",
            "dil_conv_5x5", "nor_conv_1x1", "nor_conv_3x3")


def op_color(op: str) -> str:
    """One colour per op across every figure (skip_connect is always red)."""
    palette = ("0.6", "tab:red", "tab:olive", "tab:brown", "tab:blue", "tab:cyan", "tab:purple", "tab:pink",
               "tab:orange", "tab:green")
    return palette[OP_ORDER.index(op)] if op in OP_ORDER else "black"


def alpha_trajectories(r: SearchRun, out_dir: Path) -> list[Path]:
    """Per cell type, one panel per edge: the relaxation's score of each op (DARTS: softmax(alpha)) after every epoch."""
    path = r.run.path / "alphas.npz"
    if not path.is_file():
        return []
    with np.load(path) as z:
        history = {k: z[k] for k in z.files}
    space, scfg = space_config(r.run.config.space)
    labels = space.edge_labels(scfg)
    relaxation = build_relaxation(r.run.config.get("relaxation"), space.node_edges(scfg))
    epochs_seen = len(next(iter(history.values())))
    per_epoch = [relaxation.scores({k: torch.from_numpy(v[e]) for k, v in history.items()}) for e in range(epochs_seen)]
    out = []
    for cell in per_epoch[0]:
        p = np.stack([s[cell].numpy() for s in per_epoch])  # (epochs, edges, ops)
        epochs, n = np.arange(len(p)), p.shape[1]
        cols = min(n, 7)
        fig = Figure(figsize=(2.4 * cols, 2.0 * math.ceil(n / cols) + 0.8), layout="constrained")
        axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False, sharex=True, sharey=True).flat
        handles = {}
        for e, ax in enumerate(axes):
            if e >= n:
                ax.axis("off")
                continue
            edge, ops = labels[cell][e]
            for o, op in enumerate(ops):
                (handles[op],) = ax.plot(epochs, p[:, e, o], color=op_color(op), lw=1.2, marker=".", ms=3)
            ax.set_title(edge, fontsize=9)
            ax.set_ylim(0, 1)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=min(len(handles), 8),
                   fontsize=8)
        where = "" if cell == "cell" else f", {cell} cell"
        fig.suptitle(f"{r.label}: {relaxation.score_label} per edge over epochs{where}", fontsize=10)
        out.append(out_dir / f"{r.label}-{cell}.png")
        out_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(out[-1], dpi=110)
    return out


def curves(runs: list[SearchRun], key: str, path: Path) -> Path | None:
    """`key` over epochs: a thin line per run and the mean over its seeds per method (None if never logged)."""
    series: dict[str, list[dict[int, float]]] = {}
    settings = {(r.space, r.dataset) for r in runs}
    for r in runs:
        points = {m["epoch"]: float(m[key]) for m in r.metrics if isinstance(m.get(key), (int, float))}
        if points:
            name = r.method if len(settings) == 1 else f"{r.method} ({r.space}, {r.dataset})"
            series.setdefault(name, []).append(points)
    if not series:
        return None
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.subplots()
    colors = itertools.cycle(rcParams["axes.prop_cycle"].by_key()["color"])
    for name, members in series.items():
        color = next(colors)
        for points in members:
            ax.plot(list(points), list(points.values()), color=color, lw=0.8, alpha=0.35)
        epochs = sorted({e for points in members for e in points})
        mean = [np.mean([p[e] for p in members if e in p]) for e in epochs]
        ax.plot(epochs, mean, color=color, lw=2, marker=".", label=f"{name} (n={len(members)})")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{key}: mean over seeds (thick) and each run (thin)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
