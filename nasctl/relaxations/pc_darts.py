"""PC-DARTS (Xu et al., ICLR 2020): partial channels and edge normalisation.

Follows `yuhuixu1993/PC-DARTS` model_search.py: an edge mixes softmax(alpha) over its candidates on
the first C/K channels only, passes the other channels through (max-pooled 2x2 on stride-2 edges),
concatenates and channel-shuffles them with K groups (:9-53); every edge output is scaled by the
softmax of beta over the edges entering its node (:136-159, beta init 1e-3 N(0, 1), :174-175; in the
same Adam as alpha, architect.py:17-18); the derive rule ranks softmax(alpha) * softmax(beta)
(:186-231); alpha and beta stay frozen for the first 15 of 50 epochs (train_search.py:156-157).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from nasctl.errors import NasctlError
from nasctl.relaxations.base import (
    RELAXATIONS,
    CellMix,
    EdgeMix,
    Params,
    Relaxation,
    RelaxationConfig,
    RelaxationDef,
    mix_all,
)

if TYPE_CHECKING:
    from nasctl.spaces.base import MixedOp, Supernet
    from nasctl.spaces.ops import EdgeInput


@dataclass
class PcDartsConfig(RelaxationConfig):
    partial_channels: int = MISSING  # K: 1/K of each edge's channels go through its candidates
    edge_norm: bool = MISSING  # softmax(beta) over each node's incoming edges scales them
    warmup: float = MISSING  # fraction of search.epochs with alpha and beta frozen (PC: 15 of 50 = 0.3)

    def __post_init__(self) -> None:
        if self.partial_channels < 1 or not 0 <= self.warmup < 1:
            raise NasctlError(
                f"pc_darts needs partial_channels >= 1 and 0 <= warmup < 1, got {self.partial_channels} and {self.warmup}."
            )


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, groups * n, H, W): channel g * n + i moves to i * groups + g."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def edge_weights(beta: torch.Tensor, node_edges: Sequence[Sequence[int]]) -> torch.Tensor:
    """Per alpha row, the softmax of beta over the rows entering the same node."""
    w = torch.empty_like(beta)
    for rows in node_edges:
        w[list(rows)] = torch.softmax(beta[list(rows)], -1)
    return w


@dataclass(frozen=True)
class PartialChannels:
    """An edge's `evaluate`: the candidates see the first C/K channels, the rest bypass them, then a shuffle."""

    K: int

    def __call__(self, m: MixedOp, src: EdgeInput, e: EdgeMix) -> torch.Tensor:
        x = src.x
        part = x.shape[1] // self.K
        bypass = x[:, part:]
        if m.stride == 2:
            bypass = F.max_pool2d(bypass, 2, 2, ceil_mode=True)
        y = channel_shuffle(torch.cat([mix_all(m, src.head(part), e), bypass], 1), self.K)
        return y if e.scale is None else e.scale * y


def check_split(model: Supernet, ks: Sequence[int], setting: str) -> None:
    """NasctlError unless every mixed edge's channels split into K parts for each K in `ks`."""
    if bad := sorted({(m.C, K) for m in model.mixed_ops() for K in ks if m.C % K}):
        C, K = bad[0]
        raise NasctlError(
            f"relaxation={model.relaxation.cfg.name} sends 1/{K} of each edge's channels through its candidates, but "
            f"edges of {C} channels do not split into {K} parts: choose space.C so that every cell's width is "
            f"divisible by {setting}."
        )


class PcDarts(Relaxation):
    """softmax(alpha) on 1/K of the channels, edges scaled by softmax(beta) per node."""

    @property
    def score_label(self) -> str:
        return "softmax(alpha)·softmax(beta)" if self.cfg.edge_norm else "softmax(alpha)"

    def attach(self, model: Supernet) -> None:
        super().attach(model)
        K = self.cfg.partial_channels
        check_split(model, [K], f"relaxation.partial_channels={K}")
        for m in model.mixed_ops():  # candidates of C/K channels; m.C stays the edge's width (DARTS-'s aux sees all)
            m.ops = nn.ModuleList(m.table[n](m.C // K, m.stride, False) for n in m.names)
            m.evaluate = PartialChannels(K)
        if self.cfg.edge_norm:
            self.betas = nn.ParameterDict({k: nn.Parameter(1e-3 * torch.randn(len(a))) for k, a in model.alphas.items()})

    def arch_parameters(self, model: Supernet) -> list[nn.Parameter]:
        return super().arch_parameters(model) + (list(self.betas.values()) if self.cfg.edge_norm else [])

    def params(self, model: Supernet) -> dict[str, torch.Tensor]:
        extra = {f"beta_{k}": b.detach() for k, b in self.betas.items()} if self.cfg.edge_norm else {}
        return {**super().params(model), **extra}

    def edge_mix(self, model: Supernet, weights: dict[str, torch.Tensor]) -> dict[str, CellMix]:
        if not self.cfg.edge_norm:
            return super().edge_mix(model, weights)
        return {k: CellMix(w, edge_weights(self.betas[k], self.node_edges[k])) for k, w in weights.items()}

    def arch_frozen(self, epoch: int, epochs: int) -> bool:
        return epoch < round(self.cfg.warmup * epochs)

    def scores(self, params: Params) -> dict[str, torch.Tensor]:
        out = {}
        for k, rows in self.node_edges.items():
            p = torch.softmax(params[k].detach().float().cpu(), -1)
            if self.cfg.edge_norm:
                p = p * edge_weights(params[f"beta_{k}"].detach().float().cpu(), rows)[:, None]
            out[k] = p
        return out


RELAXATIONS.register("pc_darts")(RelaxationDef(PcDartsConfig, PcDarts))
