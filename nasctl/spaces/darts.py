"""The DARTS cell search space (Liu et al. 2019): 8 cells, 4 nodes, 14 mixed edges per cell.

Follows `quark0/darts` cnn/model_search.py: stem of 3C channels, reduction cells at 1/3
and 2/3 depth, cell output = concat of the last `multiplier` nodes, GAP + linear.
Op lists per edge come from the config, so RobustDARTS S1-S4 reuse this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn

from nasctl.genotype import CellGenotype, darts_node
from nasctl.relaxations import CellMix
from nasctl.spaces.base import SPACES, EdgeLabels, MixedOp, NodeEdges, Space, Supernet, node_sum
from nasctl.spaces.ops import EdgeInput, FactorizedReduce, ReLUConvBN

CELL_TYPES = ("normal", "reduce")


@dataclass
class DartsSpaceConfig:
    name: str = MISSING
    ops: list[str] = MISSING  # candidate ops, the same on every edge
    edge_ops: Optional[dict[str, list[list[str]]]] = MISSING  # per cell type and edge (RobustDARTS S1); null = ops
    C: int = MISSING  # initial channels
    layers: int = MISSING  # cells
    steps: int = MISSING  # intermediate nodes per cell
    multiplier: int = MISSING  # nodes concatenated into the cell output
    stem_multiplier: int = MISSING


def num_edges(steps: int) -> int:
    return sum(2 + i for i in range(steps))


def node_edges_of(cfg: DartsSpaceConfig) -> NodeEdges:
    """The alpha rows entering each intermediate node: node i has the 2 + i rows after node i-1's."""
    starts = [sum(2 + j for j in range(i)) for i in range(cfg.steps)]
    rows = [list(range(s, s + 2 + i)) for i, s in enumerate(starts)]
    return {k: rows for k in CELL_TYPES}


def edge_ops_of(cfg: DartsSpaceConfig) -> dict[str, list[list[str]]]:
    """The op names of each edge per cell type, from `edge_ops` or the uniform `ops` list."""
    if cfg.edge_ops is not None:
        return {k: [list(e) for e in cfg.edge_ops[k]] for k in CELL_TYPES}
    return {k: [list(cfg.ops) for _ in range(num_edges(cfg.steps))] for k in CELL_TYPES}


class SearchCell(nn.Module):
    """One DARTS search cell: every node sums mixed edges from all earlier nodes."""

    def __init__(
        self, ops: list[list[str]], steps: int, multiplier: int,
        C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        self.pre0 = FactorizedReduce(C_pp, C, affine=False) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, False)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, False)
        self.edges = nn.ModuleList()
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                self.edges.append(MixedOp(ops[len(self.edges)], C, stride))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: CellMix, drop_prob: float) -> torch.Tensor:
        states = [EdgeInput(self.pre0(s0)), EdgeInput(self.pre1(s1))]  # each node read once by all its edges
        offset = 0
        for _ in range(self.steps):
            outs = (self.edges[offset + j](h, weights[offset + j]) for j, h in enumerate(states))
            states.append(EdgeInput(node_sum(outs, drop_prob)))
            offset += len(states) - 1
        return torch.cat([h.x for h in states[-self.multiplier :]], dim=1)


class DartsSupernet(Supernet):
    """The DARTS search network over a given op set."""

    def __init__(self, cfg: DartsSpaceConfig, num_classes: int, in_channels: int) -> None:
        super().__init__(edge_ops_of(cfg))
        C_curr = cfg.stem_multiplier * cfg.C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False), nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, cfg.C
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(cfg.layers):
            reduction = i in (cfg.layers // 3, 2 * cfg.layers // 3)
            C_curr *= 2 if reduction else 1
            ops = self.edge_ops["reduce" if reduction else "normal"]
            self.cells.append(SearchCell(ops, cfg.steps, cfg.multiplier, C_pp, C_p, C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, cfg.multiplier * C_curr
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mix = self.edge_mix()
        drop_prob = self.edge_drop_prob()
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, mix["reduce" if cell.reduction else "normal"], drop_prob)
        return self.classifier(self.pool(s1).flatten(1))


def derive_cell(weights: torch.Tensor, ops: list[list[str]], steps: int) -> tuple[tuple[str, int], ...]:
    """DARTS rule: per node keep the 2 inputs whose best non-`none` op is strongest, with that op.

    Ties go to the lower index (stable sort, first maximum), as in the reference code.
    """

    def best(k: int) -> tuple[float, str]:
        cands = [(float(weights[k, o]), name) for o, name in enumerate(ops[k]) if name != "none"]
        return max(cands, key=lambda c: c[0])  # max() keeps the first of equal maxima

    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(steps):
        inputs = sorted(range(i + 2), key=lambda j: -best(start + j)[0])[:2]
        gene += [(best(start + j)[1], j) for j in inputs]
        start += i + 2
    return tuple(gene)


def derive(scores: Mapping[str, torch.Tensor], cfg: DartsSpaceConfig) -> CellGenotype:
    """Genotype of the DARTS rule applied to the relaxation's scores of both cell types (DARTS: softmax(alpha))."""
    ops = edge_ops_of(cfg)
    cells = {k: derive_cell(scores[k], ops[k], cfg.steps) for k in CELL_TYPES}
    concat = tuple(range(2 + cfg.steps - cfg.multiplier, 2 + cfg.steps))
    return CellGenotype(cells["normal"], concat, cells["reduce"], concat, space=cfg.name)


def edge_labels(cfg: DartsSpaceConfig) -> EdgeLabels:
    """Per cell type, each alpha row's edge (`from→to`, inputs named as in the cell drawings) and its ops."""
    ends = [(darts_node(j), str(i)) for i in range(cfg.steps) for j in range(2 + i)]
    return {cell: [(f"{a}→{b}", ops) for (a, b), ops in zip(ends, edges)] for cell, edges in edge_ops_of(cfg).items()}


for _name in ("darts", "darts_nonone", "s1", "s2", "s3", "s4"):
    SPACES.register(_name)(Space(_name, DartsSpaceConfig, DartsSupernet, derive, CellGenotype, edge_labels, node_edges_of))
