"""Dominant eigenvalue of the Hessian of the validation loss w.r.t. alpha (RobustDARTS's collapse indicator).

Follows `automl/RobustDARTS` src/search/analyze.py:110-192 and train_search.py:373-420: the Hessian
of L_val(w, alpha) + (lambda_a / 2) |alpha|^2 w.r.t. all alpha tensors (weights fixed), on one
validation batch, model in train mode (BN batch statistics). `exact` builds the full matrix row by
row with double backprop and takes the largest eigenvalue of its symmetrised form with `eigvalsh`
(RD: numpy `eigvals`, which can turn complex on a numerically asymmetric matrix). `power` runs power
iteration on Hessian-vector products instead, for spaces too large for the full matrix. Computing
it leaves no trace on the search: BN running statistics and the RNG state are restored. The search
calls it in plain fp32 (`full_fp32()` and the architect's `fp32_loss`), whatever `trainer.precision`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from nasctl.spaces.base import Supernet
from nasctl.stabilizers.base import LossFn

METHODS = ("exact", "power")
POWER_ITERS, POWER_TOL = 200, 1e-5  # power iteration: at most this many HVPs, stop at this relative change

Hvp = Callable[[torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def no_trace(model: Supernet, device: torch.device) -> Iterator[None]:
    """Restore BN statistics, the RNG state and train/eval mode after the block."""
    buffers = [b.clone() for b in model.buffers()]
    training = model.training
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in zip(model.buffers(), buffers):
                    b.copy_(saved)
            model.train(training)


def power_iteration(hvp: Hvp, n: int, device: torch.device, shift: float = 0.0) -> float:
    """The largest-magnitude eigenvalue of H - shift I, plus shift."""
    v = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(device)
    v, lam = v / v.norm(), 0.0
    for _ in range(POWER_ITERS):
        w = hvp(v) - shift * v
        new = float(v @ w)
        v = w / w.norm()
        if abs(new - lam) <= POWER_TOL * abs(new):
            break
        lam = new
    return new + shift


def dominant_eigenvalue(
    model: Supernet, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, arch_weight_decay: float, method: str
) -> float:
    """max eig of d2/dalpha2 [loss_fn(x, y) + arch_weight_decay / 2 * |alpha|^2] (`exact` or `power`)."""
    alphas = model.arch_parameters()
    with no_trace(model, alphas[0].device), model.relaxation.deterministic():
        model.train()
        loss = loss_fn(x, y) + arch_weight_decay / 2 * sum((a**2).sum() for a in alphas)
        grads = torch.autograd.grad(loss, alphas, create_graph=True, materialize_grads=True)
        g = torch.cat([t.reshape(-1) for t in grads])

        def hvp(v: torch.Tensor) -> torch.Tensor:
            """H v in float64, whatever the dtype of alpha."""
            rows = torch.autograd.grad(g, alphas, grad_outputs=v.to(g.dtype), retain_graph=True, materialize_grads=True)
            return torch.cat([t.reshape(-1) for t in rows]).double()

        n = g.numel()
        if method == "exact":
            H = torch.stack([hvp(e) for e in torch.eye(n, device=g.device, dtype=torch.float64)])
            return float(torch.linalg.eigvalsh((H + H.T) / 2).max())
        lam = power_iteration(hvp, n, g.device)
        return lam if lam >= 0 else power_iteration(hvp, n, g.device, shift=lam)
