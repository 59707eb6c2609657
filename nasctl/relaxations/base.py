"""The relaxation protocol: how architecture parameters become what the mixed edges compute.

A relaxation is a module attached to the supernet (`model.relaxation`). It owns the architecture
parameters (the supernet's per-cell logits `alphas` plus any it adds, found by identity), turns them
into per-edge op weights (`mixing`), says what each edge gets (`edge_mix`) and how it evaluates its
candidates (the `evaluate` it installs on every MixedOp), and supplies schedules, a regulariser, a
warm-up and the scores the space's derive rule ranks. Every default is plain DARTS: softmax(alpha),
all candidates evaluated.

Composition: the search declares what it needs (`arch_hessian` for second order, Amended and the
Hessian diagnostic; `mixing_weights` for SDARTS's perturbation of them), a relaxation lists in
`lacks` what it cannot give with the reason, and `refuse` turns a clash into a NasctlError before
work starts.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import MISSING
from torch import nn

from nasctl.errors import NasctlError
from nasctl.registry import Registry

if TYPE_CHECKING:
    from nasctl.spaces.base import MixedOp, NodeEdges, Supernet
    from nasctl.spaces.ops import EdgeInput

Params = Mapping[str, torch.Tensor]  # name -> architecture parameter (the keys of alphas.npz)
Plan = list[tuple[int, torch.Tensor]]  # (dim, index) selections that turn a tensor of an old shape into the new one
Grown = dict[nn.Parameter, tuple[nn.Parameter, Plan]]  # new weight -> (the weight it replaces, how its state grows)


def regrow(t: torch.Tensor, plan: Plan) -> torch.Tensor:
    """`t` (shaped like a replaced weight) reshaped as its successor: index_select along each (dim, index)."""
    for dim, index in plan:
        t = t.index_select(dim, index.to(t.device))
    return t


@dataclass
class RelaxationConfig:
    name: str = MISSING


@dataclass(frozen=True)
class EdgeMix:
    """What one mixed edge gets: its op weights, an edge scale (PC-DARTS) and the sampled op (GDAS)."""

    weights: torch.Tensor  # (ops,)
    scale: torch.Tensor | None = None  # () multiplies the edge's mixture (edge normalisation)
    pick: int | None = None  # the one candidate to evaluate


@dataclass(frozen=True)
class CellMix:
    """The EdgeMix of every edge of one cell type; a space indexes it by alpha row."""

    weights: torch.Tensor  # (edges, ops)
    scales: torch.Tensor | None = None  # (edges,)
    picks: list[int] | None = None

    def __getitem__(self, k: int) -> EdgeMix:
        return EdgeMix(
            self.weights[k],
            None if self.scales is None else self.scales[k],
            None if self.picks is None else self.picks[k],
        )


Evaluate = Callable[["MixedOp", "EdgeInput", EdgeMix], torch.Tensor]  # (edge, its input, its mix) -> mixture


def mix_all(m: MixedOp, src: EdgeInput, e: EdgeMix) -> torch.Tensor:
    """DARTS: sum_o w_o o(x) over every candidate but `none` (zeros, zero gradient)."""
    return functools.reduce(operator.add, (m.candidate(i, src, e.weights[i]) for i in m.active))


class Relaxation(nn.Module):
    """DARTS (Liu et al. 2019): every edge computes sum_o softmax(alpha_edge)_o o(x)."""

    lacks: Mapping[str, str] = {}  # requirement -> why this relaxation cannot meet it
    score_label = "softmax(alpha)"  # what `scores` are, for plots

    def __init__(self, cfg: Any = None, node_edges: NodeEdges | None = None) -> None:
        super().__init__()
        self.cfg, self.node_edges = cfg, node_edges

    # -- building ------------------------------------------------------------------------------
    def attach(self, model: Supernet) -> None:
        """Install on a freshly built supernet: add parameters, replace mixed ops."""
        model.relaxation = self

    def arch_parameters(self, model: Supernet) -> list[nn.Parameter]:
        """What the architecture optimizer steps, in a fixed order."""
        return list(model.alphas.values())

    def params(self, model: Supernet) -> dict[str, torch.Tensor]:
        """The architecture parameters by name, as alphas.npz records them (detached)."""
        return {k: a.detach() for k, a in model.alphas.items()}

    # -- the forward ---------------------------------------------------------------------------
    def mixing(self, model: Supernet) -> dict[str, torch.Tensor]:
        """Per cell type, the (edges, ops) weights each edge mixes its candidates with."""
        return {k: torch.softmax(a, dim=-1) for k, a in model.alphas.items()}

    def edge_mix(self, model: Supernet, weights: Mapping[str, torch.Tensor]) -> dict[str, CellMix]:
        """What each edge gets from the (possibly perturbed) op weights."""
        return {k: CellMix(w) for k, w in weights.items()}

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[None]:
        """Inside the block a stochastic relaxation mixes with its expected weights (Hessian diagnostic)."""
        yield

    # -- the search loop -----------------------------------------------------------------------
    @property
    def weights_first(self) -> bool:
        """Whether each iteration steps the weights before the architecture (GDAS), not after (DARTS)."""
        return False

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        """Update schedules; returns scalars to log."""
        return {}

    def arch_frozen(self, epoch: int, epochs: int) -> bool:
        """Whether the architecture step is skipped in this epoch (warm-up)."""
        return False

    def stage_at(self, epoch: int, epochs: int) -> int:
        """Which stage of a staged search `epoch` is in (DrNAS's progressive learning); one stage by default."""
        return 0

    def enter_stage(self, model: Supernet, stage: int) -> Grown:
        """Change the supernet from stage `stage - 1` to `stage`; returns the weights it replaced (none: one stage)."""
        return {}

    def arch_loss(self, model: Supernet) -> torch.Tensor | None:
        """A regulariser of the relaxation added to the architecture objective."""
        return None

    # -- derivation ----------------------------------------------------------------------------
    def scores(self, params: Params) -> dict[str, torch.Tensor]:
        """Per cell type, the (edges, ops) strengths the space's derive rule ranks (float32, CPU)."""
        return {k: torch.softmax(params[k].detach().float().cpu(), -1) for k in params}

    # -- composition ---------------------------------------------------------------------------
    def refuse(self, wants: Sequence[tuple[str, str]]) -> None:
        """NasctlError for the first (setting, requirement) this relaxation cannot meet."""
        for setting, need in wants:
            if need in self.lacks:
                raise NasctlError(
                    f"relaxation={self.cfg.name} cannot be combined with {setting}: {self.lacks[need]} "
                    "The combinations that run are listed in docs/methods.md (composition matrix)."
                )


@dataclass(frozen=True)
class RelaxationDef:
    schema: type
    cls: type[Relaxation]


RELAXATIONS: Registry[RelaxationDef] = Registry("relaxation")
