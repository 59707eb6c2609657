"""The NAS-Bench-201 cell search space (Dong & Yang, ICLR 2020): 4 nodes, 6 edges, 5 ops.

Follows the benchmark's DARTS search network (AutoDL `search_model_darts.py`, `search_cells.py`):
stem conv3x3 + BN, 3 stages of N search cells (C, 2C, 4C channels) joined by stride-2 ResNet
basic blocks, BN + ReLU, GAP, linear. Every search cell shares one (6, ops) alpha. A derived
architecture is the benchmark's arch string, so its accuracy can be looked up in the table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn

from nasctl.errors import NasctlError
from nasctl.genotype import ArchString
from nasctl.relaxations import CellMix
from nasctl.spaces.base import SPACES, EdgeLabels, MixedOp, NodeEdges, Space, Supernet, node_sum
from nasctl.spaces.ops import NB201_OPS, EdgeInput, ReLUConvBN

NODES = 4
EDGES = tuple((i, j) for i in range(1, NODES) for j in range(i))  # alpha rows: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
REDUCTIONS = 2  # stride-2 blocks between the 3 stages


@dataclass
class Nb201SpaceConfig:
    name: str = MISSING
    ops: list[str] = MISSING  # candidate ops on every edge (alpha column order)
    C: int = MISSING  # channels of the first stage
    N: int = MISSING  # search cells per stage


class SearchCell(nn.Module):
    """Node i = sum over j < i of the mixed edge i<-j applied to node j; the output is the last node."""

    def __init__(self, ops: list[str], C: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(ops, C, 1, NB201_OPS) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: CellMix, drop_prob: float) -> torch.Tensor:
        nodes = [EdgeInput(x)]  # each node read once by all its edges
        for i in range(1, NODES):
            outs = (self.edges[k](nodes[j], weights[k]) for k, (t, j) in enumerate(EDGES) if t == i)
            nodes.append(EdgeInput(node_sum(outs, drop_prob)))
        return nodes[-1].x


class ResNetBlock(nn.Module):
    """The stride-2 basic block between stages: ReLU-Conv-BN twice, plus a 2x2 avg-pool + 1x1 conv shortcut."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(C_in, C_out, 3, 2, 1, True)
        self.conv_b = ReLUConvBN(C_out, C_out, 3, 1, 1, True)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(C_in, C_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


class Nb201Supernet(Supernet):
    """The NAS-Bench-201 search network with one alpha, `cell`, shared by all search cells."""

    def __init__(self, cfg: Nb201SpaceConfig, num_classes: int, in_channels: int) -> None:
        unknown = sorted(set(cfg.ops) - NB201_OPS.keys())
        if unknown or not cfg.ops:
            raise NasctlError(
                f"space.ops={list(cfg.ops)} is not a non-empty subset of the NAS-Bench-201 ops "
                f"{', '.join(NB201_OPS)} (unknown: {', '.join(unknown) or 'none'})."
            )
        super().__init__({"cell": [list(cfg.ops) for _ in EDGES]})
        self.stem = nn.Sequential(nn.Conv2d(in_channels, cfg.C, 3, padding=1, bias=False), nn.BatchNorm2d(cfg.C))
        layers: list[nn.Module] = []
        for stage in range(REDUCTIONS + 1):
            C = cfg.C * 2**stage
            if stage:
                layers.append(ResNetBlock(C // 2, C))
            layers += [SearchCell(cfg.ops, C) for _ in range(cfg.N)]
        self.layers = nn.ModuleList(layers)
        C_last = cfg.C * 2**REDUCTIONS
        self.lastact = nn.Sequential(nn.BatchNorm2d(C_last), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2**REDUCTIONS or x.shape[-2] % 2**REDUCTIONS:
            raise NasctlError(
                f"The NAS-Bench-201 network halves {tuple(x.shape[-2:])} images {REDUCTIONS} times with blocks "
                f"whose 2x2 avg-pool shortcut needs even sides, so both sides must be multiples of "
                f"{2**REDUCTIONS}: use a dataset with 16, 28 or 32-pixel images (or the darts/s1-s4 spaces)."
            )
        w, drop_prob = self.edge_mix()["cell"], self.edge_drop_prob()
        h = self.stem(x)
        for layer in self.layers:
            h = layer(h, w, drop_prob) if isinstance(layer, SearchCell) else layer(h)
        return self.classifier(self.pool(self.lastact(h)).flatten(1))


def arch_string(ops: list[str]) -> str:
    """The benchmark string `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` of one op per edge (EDGES order)."""
    nodes = ("|".join(f"{op}~{j}" for op, (t, j) in zip(ops, EDGES) if t == i) for i in range(1, NODES))
    return "+".join(f"|{node}|" for node in nodes)


def derive(scores: Mapping[str, torch.Tensor], cfg: Nb201SpaceConfig) -> ArchString:
    """NB201 rule: per edge the op with the largest score (DARTS: softmax(alpha)), `none` included; ties go to the first op."""
    best = scores["cell"].argmax(dim=-1).tolist()
    return ArchString(arch_string([cfg.ops[o] for o in best]), space=cfg.name)


def node_edges_of(cfg: Nb201SpaceConfig) -> NodeEdges:
    """The alpha rows entering nodes 1..3 (EDGES order)."""
    return {"cell": [[k for k, (t, _) in enumerate(EDGES) if t == i] for i in range(1, NODES)]}


def edge_labels(cfg: Nb201SpaceConfig) -> EdgeLabels:
    """The one cell's alpha rows as edges `from→to`, each with the candidate ops."""
    return {"cell": [(f"{j}→{i}", list(cfg.ops)) for i, j in EDGES]}


SPACES.register("nb201")(Space("nb201", Nb201SpaceConfig, Nb201Supernet, derive, ArchString, edge_labels, node_edges_of))
