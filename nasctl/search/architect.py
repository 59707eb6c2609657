"""The architecture step of DARTS: first-order or unrolled second-order hypergradient, then Adam.

Second order follows `quark0/darts` cnn/architect.py: unroll one SGD step
w' = w - xi (mu m + grad_w L_tr + lambda w) (with Nesterov momentum: the Nesterov step), take grad_alpha L_val(w', alpha) and subtract
xi * grad^2_{alpha,w} L_tr(w, alpha) grad_w' L_val(w', alpha), the mixed term by a central
finite difference with r = FD_RADIUS / ||grad_w' L_val||. Its two passes replay one RNG state, so
drop-path masks and noise are the same at w + r v and w - r v (DARTS's own code draws them anew).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasctl.spaces.base import Supernet
from nasctl.stabilizers import Batches, Stabilizer
from nasctl.train.trainer import full_fp32

Autocast = Callable[[], object]
FD_RADIUS = 0.01  # |r v| of the finite difference (DARTS cnn/architect.py:76, r = 1e-2 / ||v||)


class Architect:
    """Computes the architecture gradient and steps Adam on the alphas."""

    def __init__(
        self, model: Supernet, w_opt: torch.optim.SGD, order: str, hooks: Stabilizer,
        lr: float, betas: tuple[float, float], weight_decay: float, autocast: Autocast,
        optimizer_kwargs: dict[str, bool] | None = None,
    ) -> None:
        self.model, self.w_opt, self.order, self.hooks, self.autocast = model, w_opt, order, hooks, autocast
        self.opt = torch.optim.Adam(
            model.arch_parameters(), lr=lr, betas=betas, weight_decay=weight_decay, **(optimizer_kwargs or {})
        )

    def loss(
        self, x: torch.Tensor, y: torch.Tensor, params: dict[str, torch.Tensor] | None = None, fp32: bool = False
    ) -> torch.Tensor:
        """Cross-entropy of the supernet, optionally with substituted parameters; `fp32` ignores autocast."""
        with full_fp32() if fp32 else self.autocast():
            logits = self.model(x) if params is None else functional_call(self.model, params, (x,))
        return F.cross_entropy(logits.float(), y)

    def fp32_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """`loss` in plain fp32, for what takes second derivatives (arch_grad hooks, the Hessian diagnostic)."""
        return self.loss(x, y, fp32=True)

    def step(self, b: Batches, xi: float) -> None:
        alphas = self.model.arch_parameters()
        grads = self.first_order(b) if self.order == "first" else self.second_order(b, xi)
        terms = [t for t in (self.model.relaxation.arch_loss(self.model), self.hooks.arch_loss(self.model)) if t is not None]
        if terms:
            reg = sum(terms)
            grads = [g + r for g, r in zip(grads, torch.autograd.grad(reg, alphas, materialize_grads=True))]
        # hooks may take double gradients: eager (compiled graphs cannot) and plain fp32, forward and backward
        with torch.compiler.set_stance("force_eager"), full_fp32():
            grads = self.hooks.arch_grad(self.model, grads, b, self.fp32_loss)
        for a, g in zip(alphas, grads):
            a.grad = g
        self.opt.step()

    def first_order(self, b: Batches) -> list[torch.Tensor]:
        return list(torch.autograd.grad(self.loss(b.x_val, b.y_val), self.model.arch_parameters(), materialize_grads=True))

    def second_order(self, b: Batches, xi: float) -> list[torch.Tensor]:
        model, alphas = self.model, self.model.arch_parameters()
        arch = {id(a) for a in alphas}
        names = [n for n, p in model.named_parameters() if id(p) not in arch]
        weights = [model.get_parameter(n) for n in names]
        g_train = torch.autograd.grad(self.loss(b.x_train, b.y_train), weights, materialize_grads=True)
        unrolled, scale = self.unroll(weights, g_train, xi)
        unrolled = [w.requires_grad_() for w in unrolled]
        params = {**dict(zip(names, unrolled)), **{n: p for n, p in model.named_parameters() if id(p) in arch}}
        params.update({n: b_.clone() for n, b_ in model.named_buffers()})  # keep the real BN stats untouched
        grads = torch.autograd.grad(self.loss(b.x_val, b.y_val, params), alphas + unrolled, materialize_grads=True)
        d_alpha, v = grads[: len(alphas)], grads[len(alphas) :]
        return [d - scale * h for d, h in zip(d_alpha, self._mixed_hvp(b, weights, v))]

    def unroll(
        self, weights: list[torch.Tensor], grads: tuple[torch.Tensor, ...], xi: float
    ) -> tuple[list[torch.Tensor], float]:
        """One step of the weight SGD at lr `xi` from `weights` with `grads`, leaving its state alone, and
        the scale s of dw'/dg = -s I (what multiplies the mixed second derivative of the hypergradient).

        d = g + wd w and buf = mu m + d (m = 0 before the first step, DARTS's unroll); then
        w' = w - xi buf (s = xi), or with Nesterov w' = w - xi (d + mu buf) (s = xi (1 + mu)), the step
        torch's SGD takes.
        """
        group = self.w_opt.param_groups[0]
        mu, wd, nesterov = group["momentum"], group["weight_decay"], group["nesterov"]
        out = []
        with torch.no_grad():
            for w, g in zip(weights, grads):
                d = g + wd * w
                m = self.w_opt.state.get(w, {}).get("momentum_buffer")
                buf = d if m is None else mu * m + d
                out.append(w - xi * (d + mu * buf if nesterov else buf))
        return out, (xi * (1 + mu) if nesterov else xi)

    def _mixed_hvp(self, b: Batches, weights: list[torch.Tensor], v: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        """grad^2_{alpha,w} L_tr(w, alpha) v by central differences at w +- r v.

        Always in plain fp32: the steps r v are far below bf16's (and TF32's) resolution of the weights.
        Both passes start from the same RNG state (CPU and the model's device), so they see the same
        drop-path masks and noise: the difference is the derivative of one function, not noise over 2r.
        """
        r = FD_RADIUS / torch.sqrt(sum((x**2).sum() for x in v))
        alphas = self.model.arch_parameters()
        saved = [w.detach().clone() for w in weights]

        def grad_at(sign: float) -> tuple[torch.Tensor, ...]:
            with torch.no_grad():
                for w, w0, d in zip(weights, saved, v):
                    w.copy_(w0 + (sign * r) * d)
            return torch.autograd.grad(self.loss(b.x_train, b.y_train, fp32=True), alphas, materialize_grads=True)

        device = saved[0].device
        with full_fp32():  # the backward passes too (no TF32)
            with torch.random.fork_rng(devices=[device] if device.type != "cpu" else [], device_type=device.type):
                plus = grad_at(1.0)  # the RNG state is put back on exit: the minus pass replays the same draws
            minus = grad_at(-1.0)
        with torch.no_grad():
            for w, w0 in zip(weights, saved):
                w.copy_(w0)
        return [(p - m) / (2 * r) for p, m in zip(plus, minus)]
