"""The dominant Hessian eigenvalue diagnostic against an explicitly built Hessian."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from nasctl.search.hessian import dominant_eigenvalue
from nasctl.spaces.base import Supernet
from nasctl.spaces.darts import DartsSupernet
from tests.conftest import darts_space

WD = 1e-3


@pytest.fixture
def double():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


OPS = ("none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3")


def small_net(ops: tuple[str, ...] = OPS) -> tuple[DartsSupernet, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    cfg = darts_space(ops=list(ops), C=2, layers=3, steps=2, multiplier=2)
    model = DartsSupernet(cfg, num_classes=3, in_channels=1)
    with torch.no_grad():
        for a in model.arch_parameters():
            a.normal_()  # away from the uniform start, so the Hessian is not degenerate
    return model, torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))


def explicit_hessian(model: Supernet, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch.autograd.functional.hessian of the val loss + (WD/2)|alpha|^2 over the flattened alphas, train mode."""
    shapes = {k: a.shape for k, a in model.alphas.items()}
    fixed = {n: t.detach() for n, t in model.named_parameters() if not n.startswith("alphas.")}
    fixed.update({n: t.clone() for n, t in model.named_buffers()})

    def f(flat: torch.Tensor) -> torch.Tensor:
        alphas, i = {}, 0
        for k, shape in shapes.items():
            alphas[f"alphas.{k}"] = flat[i : i + shape.numel()].view(shape)
            i += shape.numel()
        logits = functional_call(model, {**fixed, **alphas}, (x,))
        return F.cross_entropy(logits, y) + WD / 2 * (flat**2).sum()

    model.train()
    return torch.autograd.functional.hessian(f, torch.cat([a.detach().flatten() for a in model.arch_parameters()]))


def test_exact_and_power_match_eigvalsh_of_the_autograd_hessian(double):
    model, x, y = small_net()
    H = explicit_hessian(model, x, y)
    assert torch.allclose(H, H.T, atol=1e-10)
    expected = float(torch.linalg.eigvalsh(H).max())
    loss = lambda xb, yb: F.cross_entropy(model(xb), yb)
    assert dominant_eigenvalue(model, loss, x, y, WD, "exact") == pytest.approx(expected, rel=1e-8)
    assert dominant_eigenvalue(model, loss, x, y, WD, "power") == pytest.approx(expected, rel=1e-3)


def test_power_iteration_returns_the_largest_not_the_largest_magnitude_eigenvalue(double):
    model = Supernet({"cell": [["a", "b", "c"]]})
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor([-5.0, 1.0, 2.0])) @ Q.T
    quadratic = lambda xb, yb: 0.5 * model.alphas["cell"].flatten() @ A @ model.alphas["cell"].flatten()
    for method in ("exact", "power"):
        assert dominant_eigenvalue(model, quadratic, None, None, 0.0, method) == pytest.approx(2.0, rel=1e-4)
    assert dominant_eigenvalue(model, quadratic, None, None, 2.0, "exact") == pytest.approx(4.0)  # + lambda_a I


def test_the_diagnostic_leaves_no_trace_on_the_search(double):
    model, x, y = small_net(("noise", "sep_conv_3x3"))  # S4's `noise` op draws from the RNG
    model.eval()
    buffers = [b.clone() for b in model.buffers()]
    rng = torch.get_rng_state()
    dominant_eigenvalue(model, lambda xb, yb: F.cross_entropy(model(xb), yb), x, y, WD, "exact")
    assert not model.training
    assert all(torch.equal(b, b0) for b, b0 in zip(model.buffers(), buffers))
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(a.grad is None for a in model.arch_parameters())
