"""Amended-DARTS (Bi et al., arXiv 1910.11831): an amending term on the architecture gradient.

The exact hypergradient at the inner optimum w*(alpha) is (implicit function theorem)
    g = grad_a L_val - grad2_{a,w} L_tr . H^-1 . grad_w L_val,    H = grad2_{w,w} L_tr.
This hook subtracts eta * grad2_{a,w} L_tr . M . grad_w L_val from the gradient the architect
computed, at the current w (no unroll), with M = H (`hessian`, the paper's amendment: (Hv).(H^-1 v)
= |v|^2 > 0 keeps the direction roughly right), I (`identity`) or H^-1 by `cg_steps` steps of
conjugate gradient (`cg_k`; eta = 1 then approximates the exact term). The mixed term and H use
the training batch, v = grad_w L_val the validation batch; all products are exact double-backprop
HVPs. There is no official code: see docs/methods.md for the choices made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

import torch
from omegaconf import MISSING

from nasctl.errors import NasctlError
from nasctl.spaces.base import Supernet
from nasctl.stabilizers.base import STABILIZERS, Batches, LossFn, Stabilizer, StabilizerDef

Vectors = list[torch.Tensor]


class Inverse(Enum):
    hessian = "hessian"  # M = H
    identity = "identity"  # M = I
    cg_k = "cg_k"  # M = H^-1 by cg_steps steps of conjugate gradient


@dataclass
class AmendedConfig:
    eta: float = MISSING  # scale of the amending term
    inverse: Inverse = MISSING  # what stands in for H^-1
    cg_steps: int = MISSING  # conjugate-gradient steps (HVPs) for inverse=cg_k

    def __post_init__(self) -> None:
        if self.eta < 0 or self.cg_steps < 1:
            raise NasctlError(f"amended needs eta >= 0 and cg_steps >= 1, got {self.eta} and {self.cg_steps}.")


def dot(a: Vectors, b: Vectors) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def conjugate_gradient(hvp: Callable[[Vectors], Vectors], b: Vectors, steps: int) -> Vectors:
    """`steps` CG iterations for H x = b from x = 0, without host syncs.

    Off the optimum H need not be positive definite: at the first direction with p.Hp <= 0 (or a
    zero residual) the iterate is frozen.
    """
    x = [torch.zeros_like(t) for t in b]
    r, p = list(b), list(b)
    rr = dot(r, r)
    ok = torch.ones((), dtype=torch.bool, device=rr.device)
    for _ in range(steps):
        Hp = hvp(p)
        pHp = dot(p, Hp)
        ok = ok & (pHp > 0) & (rr > 0)
        a = torch.where(ok, rr / pHp, 0.0)
        x = [xi + a * pi for xi, pi in zip(x, p)]
        r = [ri - a * hi for ri, hi in zip(r, Hp)]
        rr_new = dot(r, r)
        beta = torch.where(ok, rr_new / rr, 0.0)
        p = [ri + beta * pi for ri, pi in zip(r, p)]
        rr = rr_new
    return x


class Amended(Stabilizer):
    """g_alpha <- g_alpha - eta * grad2_{a,w} L_tr . M . grad_w L_val."""

    requires = ("arch_hessian",)

    def arch_grad(self, model: Supernet, grads: Vectors, batches: Batches, loss_fn: LossFn) -> Vectors:
        b, alphas = batches, model.arch_parameters()
        weights = model.weight_parameters()
        v = torch.autograd.grad(loss_fn(b.x_val, b.y_val), weights, materialize_grads=True)
        g_w = torch.autograd.grad(loss_fn(b.x_train, b.y_train), weights, create_graph=True, materialize_grads=True)
        # Weights the training loss does not reach (zero gradient, no graph) have zero rows in H: drop them.
        live = [i for i, g in enumerate(g_w) if g.requires_grad]
        g_w, weights, v = [g_w[i] for i in live], [weights[i] for i in live], [v[i] for i in live]

        def hvp(u: Vectors) -> Vectors:
            return list(torch.autograd.grad(g_w, weights, grad_outputs=u, retain_graph=True, materialize_grads=True))

        if self.cfg.inverse is Inverse.identity:
            u = v
        elif self.cfg.inverse is Inverse.hessian:
            u = hvp(v)
        else:
            u = conjugate_gradient(hvp, v, self.cfg.cg_steps)
        mixed = torch.autograd.grad(g_w, alphas, grad_outputs=[t.detach() for t in u], materialize_grads=True)
        return [g - self.cfg.eta * m for g, m in zip(grads, mixed)]


STABILIZERS.register("amended")(StabilizerDef(AmendedConfig, Amended))
