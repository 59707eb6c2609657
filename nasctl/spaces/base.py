"""What every search space provides: a supernet with architecture logits, and a derive rule.

A space knows its cells and how to derive a genotype; it knows nothing about how the
logits are optimised (that is the search loop's and the stabilizers' business).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasctl.genotype import Genotype
from nasctl.registry import Registry
from nasctl.spaces.ops import OPS, OpFactory, drop_path

EdgeLabels = dict[str, list[tuple[str, list[str]]]]
NodeEdges = dict[str, list[list[int]]]  # per cell type, the alpha rows entering each node
Projection = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # mixing weights -> the weights used


class MixedOp(nn.Module):
    """Weighted sum of candidate ops on one edge: sum_o w_o * o(x), plus `aux(x)` when a stabilizer sets one.

    Stabilizers adapt every space the same way through two knobs: `aux`, a branch added outside
    the mixture (DARTS-), and `wrap`, which replaces one candidate by a module around it
    (NoisyDARTS on `skip_connect`). With neither set, the forward is plain DARTS.
    """

    def __init__(self, names: list[str], C: int, stride: int, table: Mapping[str, OpFactory] = OPS) -> None:
        super().__init__()
        self.names, self.C, self.stride = list(names), C, stride
        self.ops = nn.ModuleList(table[n](C, stride, False) for n in self.names)
        # `none` outputs zeros: it adds nothing to the sum and gets zero gradient, so skip it.
        self.active = [i for i, n in enumerate(self.names) if n != "none"]
        self.aux: nn.Module | None = None

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        out = sum(w[i] * self.ops[i](x) for i in self.active)
        return out if self.aux is None else out + self.aux(x)

    def wrap(self, name: str, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Replace candidate `name`, where this edge has it, by `wrapper(op)`."""
        if name in self.names:
            i = self.names.index(name)
            self.ops[i] = wrapper(self.ops[i])


class Supernet(nn.Module):
    """A weight-sharing network mixing its candidate ops with softmax(alpha) per edge.

    `edge_ops[cell][edge]` names the candidate ops of each edge (the column labels of
    `alphas[cell]`, one (edges, ops) logit matrix per cell type). The logits are registered
    parameters (so they move, save and load with the model) but are excluded from
    `weight_parameters()`, hence from the weight optimizer and its gradient clipping.
    Search drop-path (RobustDARTS) is part of the API: the loop calls `set_drop_path` each epoch
    and a space's cells sum their mixed-edge outputs with `node_sum(outs, self.edge_drop_prob())`.
    """

    def __init__(self, edge_ops: Mapping[str, list[list[str]]]) -> None:
        super().__init__()
        self.edge_ops = {k: [list(names) for names in edges] for k, edges in edge_ops.items()}
        self.alphas = nn.ParameterDict(
            {k: nn.Parameter(1e-3 * torch.randn(len(e), len(e[0]))) for k, e in self.edge_ops.items()}
        )
        self._mixing_override: dict[str, torch.Tensor] | None = None
        self._projection: Projection | None = None
        self.drop_prob = 0.0

    def set_drop_path(self, prob: float) -> None:
        """Search drop-path: each whole mixed-edge output is dropped per sample with `prob` in train mode."""
        self.drop_prob = prob

    def edge_drop_prob(self) -> float:
        """The drop-path probability the cells apply now: `set_drop_path`'s in train mode, 0 in eval mode."""
        return self.drop_prob if self.training else 0.0

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.alphas.values())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixing(self) -> dict[str, torch.Tensor]:
        """The per-edge mixing weights: softmax(alpha), unless overridden (SDARTS), then projected (DARTS-PT)."""
        if self._mixing_override is not None:
            w = self._mixing_override
        else:
            w = {k: torch.softmax(a, dim=-1) for k, a in self.alphas.items()}
        return w if self._projection is None else self._projection(w)

    @contextlib.contextmanager
    def mixing_override(self, weights: dict[str, torch.Tensor]) -> Iterator[None]:
        """Use `weights` directly as mixing weights (no softmax) inside the block."""
        saved, self._mixing_override = self._mixing_override, weights
        try:
            yield
        finally:
            self._mixing_override = saved

    @contextlib.contextmanager
    def mixing_projection(self, project: Projection) -> Iterator[None]:
        """Inside the block every forward mixes with `project(weights)` (DARTS-PT's decided and masked edges)."""
        saved, self._projection = self._projection, project
        try:
            yield
        finally:
            self._projection = saved

    def mixed_ops(self) -> Iterator[MixedOp]:
        return (m for m in self.modules() if isinstance(m, MixedOp))


def node_sum(outs: Iterable[torch.Tensor], drop_prob: float) -> torch.Tensor:
    """A node of a search cell: the sum of its mixed-edge outputs, each drop-pathed when `drop_prob` > 0."""
    return sum(drop_path(o, drop_prob) if drop_prob > 0 else o for o in outs)


@dataclass(frozen=True)
class Space:
    """A registered search space: its config schema, supernet builder, derive rule and genotype type."""

    name: str
    schema: type
    build: Callable[[Any, int, int], Supernet]  # (space cfg, num_classes, in_channels)
    derive: Callable[[Mapping[str, torch.Tensor], Any], Genotype]  # (alphas, space cfg) -> genotype
    genotype: type  # what `derive` returns: CellGenotype or ArchString, which own short form, graphs, lookup
    edge_labels: Callable[[Any], EdgeLabels]  # (space cfg) -> per cell type, each alpha row's `from→to` and ops
    node_edges: Callable[[Any], NodeEdges]  # (space cfg) -> per cell type, the alpha rows entering each node


SPACES: Registry[Space] = Registry("search space")
