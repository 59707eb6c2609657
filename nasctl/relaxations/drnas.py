"""DrNAS (Chen et al., ICLR 2021): mixing weights drawn from a Dirichlet whose concentration is learned.

Follows `xiangning-chen/DrNAS` utils.py:167-194 and DARTS-space/model_search.py:173-191: the
concentration is c = ELU(alpha) + 1 > 0; every forward draws, per edge, one w ~ Dir(c_edge) with the
pathwise (implicit reparameterisation) gradient, shared by all cells of a type and the whole batch.
The regulariser toward the prior Dir(1): the official default (reg_type=l2) is Adam's weight decay
on alpha (architect.py:17-22), i.e. search.arch_weight_decay; reg_type=kl adds
kl_scale * sum_edges KL(Dir(c) || Dir(1)) to the validation loss (model_search.py:144-148,193-209).
The derive rule ranks softmax(alpha) (model_search.py:227-261). Progressive learning (partial
channels, pruning to 4 ops, widening; train_search.py:118-159) is not implemented.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch.distributions import Dirichlet, kl_divergence

from nasctl.errors import NasctlError
from nasctl.relaxations.base import RELAXATIONS, Relaxation, RelaxationConfig, RelaxationDef

if TYPE_CHECKING:
    from nasctl.spaces.base import NodeEdges, Supernet


@dataclass
class DrnasConfig(RelaxationConfig):
    kl_scale: float = MISSING  # reg_type=kl: weight of sum KL(Dir(c) || Dir(1)); 0 = the L2 default via Adam's wd

    def __post_init__(self) -> None:
        if self.kl_scale < 0:
            raise NasctlError(f"drnas needs kl_scale >= 0, got {self.kl_scale}.")


def concentration(alpha: torch.Tensor) -> torch.Tensor:
    return F.elu(alpha) + 1


def kl_to_uniform(alpha: torch.Tensor) -> torch.Tensor:
    """sum over rows of KL(Dir(ELU(alpha) + 1) || Dir(1, ..., 1))."""
    c = concentration(alpha)
    return kl_divergence(Dirichlet(c), Dirichlet(torch.ones_like(c))).sum()


class Drnas(Relaxation):
    """w_edge ~ Dir(ELU(alpha_edge) + 1), drawn in every forward (its mean inside `deterministic`)."""

    score_label = "softmax(alpha)"

    def __init__(self, cfg: DrnasConfig, node_edges: NodeEdges | None = None) -> None:
        super().__init__(cfg, node_edges)
        self.mean = False

    def mixing(self, model: Supernet) -> dict[str, torch.Tensor]:
        out = {}
        for k, a in model.alphas.items():
            c = concentration(a)
            out[k] = c / c.sum(-1, keepdim=True) if self.mean else Dirichlet(c).rsample()
        return out

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[None]:
        saved, self.mean = self.mean, True
        try:
            yield
        finally:
            self.mean = saved

    def arch_loss(self, model: Supernet) -> torch.Tensor | None:
        if not self.cfg.kl_scale:
            return None
        return self.cfg.kl_scale * sum(kl_to_uniform(a) for a in model.alphas.values())


RELAXATIONS.register("drnas")(RelaxationDef(DrnasConfig, Drnas))
