"""What every search space provides: a supernet with architecture logits, and a derive rule.

A space knows its cells and how to derive a genotype; it knows nothing about how the
logits are optimised (that is the search loop's and the stabilizers' business).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nasctl.genotype import Genotype
from nasctl.registry import Registry
from nasctl.relaxations.base import CellMix, EdgeMix, Evaluate, Relaxation, mix_all
from nasctl.spaces.ops import OPS, EdgeInput, Mixable, OpFactory, drop_path

EdgeLabels = dict[str, list[tuple[str, list[str]]]]
NodeEdges = dict[str, list[list[int]]]  # per cell type, the alpha rows entering each node
Projection = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]  # mixing weights -> the weights used


class MixedOp(nn.Module):
    """Weighted sum of candidate ops on one edge: sum_o w_o * o(x), plus `aux(x)` when a stabilizer sets one.

    Stabilizers adapt every space the same way through two knobs: `aux`, a branch added outside
    the mixture (DARTS-), and `wrap`, which replaces one candidate by a module around it
    (NoisyDARTS on `skip_connect`). With neither set, the forward is plain DARTS. How the
    candidates are evaluated, `evaluate(op, x, edge_mix)`, is the relaxation's: every candidate
    (`mix_all`), a channel subset (PC-DARTS) or one sampled op (GDAS).
    """

    def __init__(self, names: list[str], C: int, stride: int, table: Mapping[str, OpFactory] = OPS) -> None:
        super().__init__()
        self.names, self.C, self.stride, self.table = list(names), C, stride, table
        self.ops = nn.ModuleList(table[n](C, stride, False) for n in self.names)
        # `none` outputs zeros: it adds nothing to the sum and gets zero gradient, so skip it.
        self.active = [i for i, n in enumerate(self.names) if n != "none"]
        self.aux: nn.Module | None = None
        self.evaluate: Evaluate = mix_all

    def forward(self, x: torch.Tensor | EdgeInput, e: EdgeMix) -> torch.Tensor:
        """The edge's output; a cell passes each node as an `EdgeInput` shared by the edges that read it."""
        src = x if isinstance(x, EdgeInput) else EdgeInput(x)
        if torch.compiler.is_compiling():  # a compiled edge reads its input alone: a node-wide memo would give
            src = EdgeInput(src.x)  # every edge guards of its own (no shared graphs); the compiler dedupes instead
        out = self.evaluate(self, src, e)
        return out if self.aux is None else out + self.aux(src.x)

    def candidate(self, i: int, src: EdgeInput, w: torch.Tensor) -> torch.Tensor:
        """w * (candidate i)(src.x), through the candidate's fused path where it has one (`Mixable`)."""
        op = self.ops[i]
        return op.weighted(src, w) if isinstance(op, Mixable) else w * op(src.x)

    def wrap(self, name: str, wrapper: Callable[[nn.Module], nn.Module]) -> None:
        """Replace candidate `name`, where this edge has it, by `wrapper(op)`."""
        if name in self.names:
            i = self.names.index(name)
            self.ops[i] = wrapper(self.ops[i])


class Supernet(nn.Module):
    """A weight-sharing network whose edges mix their candidate ops as its relaxation says.

    `edge_ops[cell][edge]` names the candidate ops of each edge (the column labels of
    `alphas[cell]`, one (edges, ops) logit matrix per cell type). The logits are registered parameters (so they move, save and
    load with the model); they and whatever the relaxation (`self.relaxation`, DARTS until one is
    attached) adds are the architecture parameters, excluded by identity from `weight_parameters()`,
    hence from the weight optimizer and its gradient clipping. A space's forward passes each edge
    `edge_mix()[cell][row]`.
    Search drop-path (RobustDARTS) is part of the API: the loop calls `set_drop_path` each epoch
    and a space's cells sum their mixed-edge outputs with `node_sum(outs, self.edge_drop_prob())`.
    """

    def __init__(self, edge_ops: Mapping[str, list[list[str]]]) -> None:
        super().__init__()
        self.edge_ops = {k: [list(names) for names in edges] for k, edges in edge_ops.items()}
        self.alphas = nn.ParameterDict(
            {k: nn.Parameter(1e-3 * torch.randn(len(e), len(e[0]))) for k, e in self.edge_ops.items()}
        )
        self.relaxation = Relaxation()
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
        return self.relaxation.arch_parameters(self)

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def mixing(self) -> dict[str, torch.Tensor]:
        """The relaxation's per-edge op weights (DARTS: softmax(alpha)), unless overridden (SDARTS), then projected (DARTS-PT)."""
        w = self._mixing_override if self._mixing_override is not None else self.relaxation.mixing(self)
        return w if self._projection is None else self._projection(w)

    def edge_mix(self) -> dict[str, CellMix]:
        """Per cell type, what each mixed edge gets in this forward (op weights, edge scale, sampled op)."""
        return self.relaxation.edge_mix(self, self.mixing())

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

    def compile_regions(self) -> Iterator[MixedOp]:
        """What `trainer.compile=regional` compiles: every mixed edge (same ops, width and stride: one graph)."""
        return self.mixed_ops()


class DenseGrad(torch.autograd.Function):
    """Identity whose backward hands on the gradient dense, in the forward's memory format: a node's gradient
    is often a strided slice of the cell's concat, on which the CPU's batch-norm backward runs up to 10x slower."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        nhwc = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        ctx.layout = torch.channels_last if nhwc else torch.contiguous_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g.contiguous(memory_format=ctx.layout)


def node_sum(outs: Iterable[torch.Tensor], drop_prob: float) -> torch.Tensor:
    """A node of a search cell: the sum of its mixed-edge outputs, each drop-pathed when `drop_prob` > 0."""
    return DenseGrad.apply(functools.reduce(operator.add, (drop_path(o, drop_prob) if drop_prob > 0 else o for o in outs)))


@dataclass(frozen=True)
class Space:
    """A registered search space: its config schema, supernet builder, derive rule and genotype type."""

    name: str
    schema: type
    build: Callable[[Any, int, int], Supernet]  # (space cfg, num_classes, in_channels)
    derive: Callable[[Mapping[str, torch.Tensor], Any], Genotype]  # (relaxation's scores, space cfg) -> genotype
    genotype: type  # what `derive` returns: CellGenotype or ArchString, which own short form, graphs, lookup
    edge_labels: Callable[[Any], EdgeLabels]  # (space cfg) -> per cell type, each alpha row's `from→to` and ops
    node_edges: Callable[[Any], NodeEdges]  # (space cfg) -> per cell type, the alpha rows entering each node


SPACES: Registry[Space] = Registry("search space")
