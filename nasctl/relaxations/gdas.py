"""GDAS (Dong & Yang, CVPR 2019): one op per edge drawn by hard Gumbel-softmax, straight-through.

Follows `D-X-Y/AutoDL-Projects` (xautodl/) models/cell_searchs/search_model_gdas.py:114-142 and
search_model_gdas_nasnet.py:163-191: once per forward, per alpha row, p = softmax((log_softmax(alpha) + g) / tau)
with Gumbel noise g = -log(Exp(1)) (redrawn while it or p is not finite), k = argmax p and the weights
h = onehot(k) - stopgrad(p) + p (value one-hot, gradient that of p). Only candidate k runs:
h_k o_k(x) (search_cells.py:180-181,236-251); the NB201 cell also adds the zero-valued h of the
other candidates (search_cells.py:72-86), which gives them a gradient (`unsampled_scalars`).
tau falls linearly from tau_max at the first epoch to tau_min at the last (exps/NAS-Bench-201-algos/GDAS.py:229,237-239);
each iteration steps the weights first, then alpha (GDAS.py:40-69).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from nasctl.errors import NasctlError
from nasctl.relaxations.base import RELAXATIONS, CellMix, EdgeMix, Relaxation, RelaxationConfig, RelaxationDef

if TYPE_CHECKING:
    from nasctl.spaces.base import MixedOp, NodeEdges, Supernet
    from nasctl.spaces.ops import EdgeInput


@dataclass
class GdasConfig(RelaxationConfig):
    tau_max: float = MISSING  # Gumbel-softmax temperature at the first epoch
    tau_min: float = MISSING  # ... and at the last
    weights_first: bool = MISSING  # each iteration: weight step, then architecture step (GDAS.py:40-69)
    unsampled_scalars: bool = MISSING  # add the other candidates' zero-valued h to the edge (AD's NB201 cell)

    def __post_init__(self) -> None:
        if not 0 < self.tau_min <= self.tau_max:
            raise NasctlError(f"gdas needs 0 < tau_min <= tau_max, got {self.tau_min} and {self.tau_max}.")


def gumbel_hard(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Per row a straight-through one-hot sample of softmax(logits) at temperature tau."""
    while True:
        g = -torch.empty_like(logits).exponential_().log()
        p = torch.softmax((logits.log_softmax(-1) + g) / tau, -1)
        if bool(torch.isfinite(g).all() and torch.isfinite(p).all()):
            break
    return F.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype) - p.detach() + p


@dataclass(frozen=True)
class SampledOne:
    """An edge's `evaluate`: only the sampled candidate runs, h_k o_k(x) (+ the other h's, valued 0)."""

    unsampled_scalars: bool

    def __call__(self, m: MixedOp, src: EdgeInput, e: EdgeMix) -> torch.Tensor:
        out = e.weights[e.pick] * m.ops[e.pick](src.x)  # its own forward: one op, nothing to share or fuse
        if self.unsampled_scalars:
            out = out + sum(e.weights[i] for i in range(len(m.ops)) if i != e.pick)
        return out


class Gdas(Relaxation):
    """Hard Gumbel-softmax over each edge's candidates; one runs per edge and forward."""

    lacks = {
        "mixing_weights": (
            "SDARTS perturbs the mixing weights of every candidate, but a GDAS edge runs only its sampled op and "
            "its one-hot weights are already a random draw; perturbing them would run ops GDAS never runs."
        ),
        "arch_hessian": (
            "the Hessian w.r.t. alpha (second order, Amended, DARTS-ES, the eigenvalue diagnostic) needs a loss "
            "that is a smooth function of alpha, but GDAS's forward is a one-hot draw whose alpha gradient is "
            "the straight-through surrogate of the soft weights, not a derivative of that loss."
        ),
    }

    def __init__(self, cfg: GdasConfig, node_edges: NodeEdges | None = None) -> None:
        super().__init__(cfg, node_edges)
        self.tau = cfg.tau_max

    @property
    def weights_first(self) -> bool:
        return self.cfg.weights_first

    def attach(self, model: Supernet) -> None:
        super().attach(model)
        for m in model.mixed_ops():
            m.evaluate = SampledOne(self.cfg.unsampled_scalars)

    def on_epoch_start(self, epoch: int, epochs: int) -> dict[str, float]:
        c = self.cfg
        self.tau = c.tau_min + (c.tau_max - c.tau_min) * (1 - epoch / max(epochs - 1, 1))  # exact at both ends
        return {"gdas_tau": self.tau}

    def mixing(self, model: Supernet) -> dict[str, torch.Tensor]:
        return {k: gumbel_hard(a, self.tau) for k, a in model.alphas.items()}

    def edge_mix(self, model: Supernet, weights: dict[str, torch.Tensor]) -> dict[str, CellMix]:
        return {k: CellMix(w, picks=w.argmax(-1).tolist()) for k, w in weights.items()}


RELAXATIONS.register("gdas")(RelaxationDef(GdasConfig, Gdas))
