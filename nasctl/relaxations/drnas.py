"""DrNAS (Chen et al., ICLR 2021): mixing weights drawn from a Dirichlet whose concentration is learned.

Follows `xiangning-chen/DrNAS` utils.py:167-194 and DARTS-space/model_search.py:173-191: the
concentration is c = ELU(alpha) + 1 > 0; every forward draws, per edge, one w ~ Dir(c_edge) with the
pathwise (implicit reparameterisation) gradient, shared by all cells of a type and the whole batch.
The regulariser toward the prior Dir(1): the official default (reg_type=l2) is Adam's weight decay
on alpha (architect.py:17-22), i.e. search.arch_weight_decay; reg_type=kl adds
kl_scale * sum_edges KL(Dir(c) || Dir(1)) to the validation loss (model_search.py:144-148,193-209).
The derive rule ranks softmax(alpha) (model_search.py:227-261).
Progressive learning (`progressive`, train_search.py:118-159): stages of PC-DARTS partial channels
without edge normalisation; entering a stage prunes each edge to its top alphas (utils.py:197-207:
kept values stay, the others are zeroed and masked forever; the draw is renormalised over the kept
ops, utils.py:176-181, which is a draw of Dir(c_kept)) and widens every candidate from C/K to C/K'
channels by copying randomly chosen filters (net2wider.py:7-76); alpha is frozen for the first
`warmup` of each stage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn
from torch.distributions import Dirichlet, kl_divergence

from nasctl.errors import NasctlError
from nasctl.relaxations.base import RELAXATIONS, Grown, Params, Relaxation, RelaxationConfig, RelaxationDef
from nasctl.relaxations.pc_darts import PartialChannels, check_split
from nasctl.relaxations.widen import widen

if TYPE_CHECKING:
    from nasctl.spaces.base import NodeEdges, Supernet


@dataclass
class ProgressiveConfig:
    k: list[int] = MISSING  # partial channels K of each stage (1/K of an edge's channels through its candidates)
    ops: list[int] = MISSING  # candidates kept per edge in each stage (the first stage keeps them all)
    epochs: list[float] = MISSING  # each stage's fraction of search.epochs (they sum to 1)
    warmup: float = MISSING  # fraction of each stage with alpha frozen (DR: 10 of 25 epochs)


@dataclass
class DrnasConfig(RelaxationConfig):
    kl_scale: float = MISSING  # reg_type=kl: weight of sum KL(Dir(c) || Dir(1)); 0 = the L2 default via Adam's wd
    progressive: ProgressiveConfig | None = MISSING  # null = one stage, all channels, all ops

    def __post_init__(self) -> None:
        if self.kl_scale < 0:
            raise NasctlError(f"drnas needs kl_scale >= 0, got {self.kl_scale}.")
        p = self.progressive
        if p is None:
            return
        ok = len(p.k) == len(p.ops) == len(p.epochs) >= 1 and 0 <= p.warmup < 1
        ok = ok and all(k >= 1 for k in p.k) and all(a >= b for a, b in zip(p.k, p.k[1:]))
        ok = ok and all(n >= 1 for n in p.ops) and all(a >= b for a, b in zip(p.ops, p.ops[1:]))
        if not (ok and all(f >= 0 for f in p.epochs) and abs(sum(p.epochs) - 1) < 1e-6):
            raise NasctlError(
                "drnas progressive learning needs equally long lists progressive.k (non-increasing, >= 1), "
                "progressive.ops (non-increasing, >= 1) and progressive.epochs (fractions >= 0 summing to 1) and "
                f"0 <= progressive.warmup < 1, got k={p.k}, ops={p.ops}, epochs={p.epochs}, warmup={p.warmup}."
            )


def masked(w: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Rows of `w` zeroed outside `keep` and renormalised over it (DR utils.py:176-181)."""
    w = torch.where(keep, w, torch.zeros_like(w))
    return w / w.sum(-1, keepdim=True)


def prune(alpha: torch.Tensor, keep: torch.Tensor, n: int) -> torch.Tensor:
    """The mask of each row's top-n kept entries; in place, alpha keeps them and is zeroed elsewhere."""
    top = torch.where(keep, alpha, torch.full_like(alpha, -torch.inf)).topk(n, dim=-1).indices
    new = torch.zeros_like(keep).scatter(-1, top, True)
    alpha.masked_fill_(~new, 0.0)
    return new


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
        self.stage = 0

    @property
    def lacks(self) -> dict[str, str]:  # type: ignore[override]
        if self.cfg.progressive is None:
            return {}
        return {"mixing_weights": "with progressive learning the Dirichlet draw gives pruned ops weight 0, and a "
                                  "perturbation of the mixing weights would give them weight again."}

    def attach(self, model: Supernet) -> None:
        super().attach(model)
        p = self.cfg.progressive
        if p is None:
            return
        if p.ops[0] != (n := len(next(iter(model.alphas.values()))[0])):
            raise NasctlError(f"drnas progressive.ops starts with the whole op list ({n} ops), got {p.ops}.")
        check_split(model, p.k, f"each of relaxation.progressive.k={p.k}")
        for m in model.mixed_ops():  # stage 0: candidates of C/K channels, no edge normalisation (DR model_search.py:41-56)
            m.ops = nn.ModuleList(m.table[n](m.C // p.k[0], m.stride, False) for n in m.names)
            m.evaluate = PartialChannels(p.k[0])
        for k, a in model.alphas.items():
            self.register_buffer(f"keep_{k}", torch.ones_like(a, dtype=torch.bool))

    def mixing(self, model: Supernet) -> dict[str, torch.Tensor]:
        out = {}
        for k, a in model.alphas.items():
            c = concentration(a)
            w = c / c.sum(-1, keepdim=True) if self.mean else Dirichlet(c).rsample()
            out[k] = masked(w, getattr(self, f"keep_{k}")) if self.stage else w
        return out

    def params(self, model: Supernet) -> dict[str, torch.Tensor]:
        keep = {f"keep_{k}": getattr(self, f"keep_{k}").float() for k in model.alphas} if self.cfg.progressive else {}
        return {**super().params(model), **keep}

    def scores(self, params: Params) -> dict[str, torch.Tensor]:
        """softmax(alpha), renormalised over the kept ops after a pruning (DR model_search.py:250-253)."""
        out = {}
        for k in self.node_edges:
            p = torch.softmax(params[k].detach().float().cpu(), -1)
            keep = params.get(f"keep_{k}")
            out[k] = p if keep is None or bool(keep.all()) else masked(p, keep.cpu().bool())
        return out

    # -- progressive learning -------------------------------------------------------------------
    def bounds(self, epochs: int) -> list[int]:
        """The first epoch of each stage, then `epochs`."""
        acc, out = 0.0, [0]
        for f in self.cfg.progressive.epochs:
            acc += f
            out.append(round(acc * epochs))
        out[-1] = epochs
        return out

    def stage_at(self, epoch: int, epochs: int) -> int:
        if self.cfg.progressive is None:
            return 0
        return max(i for i, b in enumerate(self.bounds(epochs)[:-1]) if b <= epoch)

    def arch_frozen(self, epoch: int, epochs: int) -> bool:
        """The warm-up counts from each stage's first epoch (DR train_search.py:136,182-183)."""
        if self.cfg.progressive is None:
            return False
        b, s = self.bounds(epochs), self.stage_at(epoch, epochs)
        return epoch - b[s] < round(self.cfg.progressive.warmup * (b[s + 1] - b[s]))

    def enter_stage(self, model: Supernet, stage: int) -> Grown:
        """Prune each edge to its top `ops[stage]` alphas, then widen the candidates to C/k[stage] channels."""
        p = self.cfg.progressive
        for k, a in model.alphas.items():
            keep = getattr(self, f"keep_{k}")
            with torch.no_grad():
                keep.copy_(prune(a, keep, p.ops[stage]))
        grown: Grown = {}
        if p.k[stage] != p.k[stage - 1]:
            for m in model.mixed_ops():
                for op in m.ops:
                    grown.update(widen(op, m.C // p.k[stage]))
                m.evaluate = PartialChannels(p.k[stage])
        self.stage = stage
        return grown

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
