"""Derived cells drawn with matplotlib, from the graphs their genotype type gives (`Genotype.graphs`).

Layout: a node's column is its longest path from the inputs; nodes of a column are stacked.
Edges that skip columns are drawn as arcs so they do not run through the nodes in between.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nasctl import genotype as G
from nasctl.genotype import Edge

DX, DY = 2.4, 1.5  # column and row spacing


def layout(nodes: list[str], edges: list[Edge]) -> dict[str, tuple[float, float]]:
    """Column = longest path from an input (the first node(s)); in a column, nodes sit in the order of
    their inputs' mean height (fewer crossings), centred."""
    column = {n: 0 for n in nodes[:2] if not any(e[1] == n for e in edges)}
    for n in nodes:  # nodes are listed in topological order
        if n not in column:
            column[n] = 1 + max((column[a] for a, b, _ in edges if b == n and a in column), default=0)
    pos: dict[str, tuple[float, float]] = {}
    for c in sorted(set(column.values())):
        stack = [n for n in nodes if column[n] == c]
        height = {n: -sum(pos[a][1] for a, b, _ in edges if b == n) / max(1, sum(b == n for _, b, _ in edges))
                  for n in stack}
        stack.sort(key=lambda n: height[n])
        pos.update({n: (c * DX, ((len(stack) - 1) / 2 - k) * DY) for k, n in enumerate(stack)})
    return pos


def draw_cell(ax: Axes, nodes: list[str], edges: list[Edge], title: str) -> None:
    pos = layout(nodes, edges)

    def apex(a: str, b: str, rad: float) -> tuple[float, float]:
        """Midpoint of matplotlib's arc3 curve: chord midpoint + rad/2 * (dy, -dx)."""
        (x0, y0), (x1, y1) = pos[a], pos[b]
        return (x0 + x1) / 2 + rad / 2 * (y1 - y0), (y0 + y1) / 2 - rad / 2 * (x1 - x0)

    labels: list[tuple[float, float]] = []

    def clearance(a: str, b: str, rad: float) -> list[float]:
        """Distances from the curve's midpoint to the other nodes and the labels placed so far, nearest first."""
        others = [p for n, p in pos.items() if n not in (a, b)] + labels
        return sorted(math.dist(apex(a, b, rad), p) for p in others)

    for a, b, op in edges:
        rad = 0.0
        if abs(pos[b][0] - pos[a][0]) > DX or pos[a][0] == pos[b][0]:  # straight or arced, away from the rest
            rad = max((0.0, 0.3, -0.3), key=lambda r: clearance(a, b, r))
        arrow = {"arrowstyle": "-|>", "color": "0.35", "lw": 1.0, "shrinkA": 14, "shrinkB": 14,
                 "connectionstyle": f"arc3,rad={rad}"}
        ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops=arrow)
        if op:
            labels.append(apex(a, b, rad))
            ax.text(*labels[-1], op, fontsize=7, ha="center", va="center",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for n, (x, y) in pos.items():
        ax.text(x, y, n, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "circle,pad=0.3", "fc": "#dbe9f6" if n[0].isdigit() else "#f6e3c6", "ec": "0.3"})
    xs, ys = [p[0] for p in pos.values()], [p[1] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.7, max(xs) + 0.7)
    ax.set_ylim(min(ys) - 1.2, max(ys) + 1.2)
    ax.set_aspect("equal")  # arcs bend in display space: equal scales keep the labels on them
    ax.set_title(title, fontsize=10)
    ax.axis("off")


def draw(g: G.Genotype, path: Path, title: str) -> Path:
    """Save a PNG of every cell type of a derived genotype side by side."""
    cells = g.graphs()
    fig = Figure(figsize=(6.5 * len(cells), 3.8), layout="constrained")
    for ax, (name, (nodes, edges)) in zip(fig.subplots(1, len(cells), squeeze=False)[0], cells.items()):
        draw_cell(ax, nodes, edges, "cell" if name == "cell" else f"{name} cell")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
