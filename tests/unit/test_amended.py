"""Amended-DARTS against the exact bilevel hypergradient (implicit function theorem) on a quadratic problem.

Inner: L_tr(w, a) = 1/2 w'Aw - w'Ba (A symmetric), so w*(a) = A^-1 B a, H = A and grad2_{a,w} L_tr = -B'.
Outer: L_val(w, a) = 1/2 |w - c|^2 + d'a. Exact: dL_val(w*(a), a)/da = d + B'A^-1 (w* - c).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import nasctl
from nasctl.spaces.base import Supernet
from nasctl.spaces.darts import DartsSupernet
from nasctl.stabilizers import Batches, Stabilizers
from tests.conftest import darts_space
from tests.unit.test_architect import smooth

K = 5
TRAIN, VAL = torch.zeros(1), torch.ones(1)  # batch markers: the toy losses ignore the data


class Quadratic(Supernet):
    """alpha (1, K) and weights w (K,) of the toy bilevel problem."""

    def __init__(self, A: torch.Tensor, B: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> None:
        super().__init__({"cell": [["op"] * K]})
        self.A, self.B, self.c, self.d = A, B, c, d
        with torch.no_grad():
            self.alphas["cell"].data = torch.randn(1, K, dtype=torch.float64)
        self.w = torch.nn.Parameter(torch.linalg.solve(A, B @ self.a()))  # the inner optimum w*(alpha)

    def a(self) -> torch.Tensor:
        return self.alphas["cell"].flatten()

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x is TRAIN:
            return 0.5 * self.w @ self.A @ self.w - self.w @ self.B @ self.a()
        return 0.5 * ((self.w - self.c) ** 2).sum() + self.d @ self.a()

    def exact_hypergradient(self) -> torch.Tensor:
        a = self.a().detach().requires_grad_()
        w_star = torch.linalg.solve(self.A, self.B @ a)
        (g,) = torch.autograd.grad(0.5 * ((w_star - self.c) ** 2).sum() + self.d @ a, a)
        return g


def problem(seed: int, eigenvalues: list[float], d_zero: bool = False) -> Quadratic:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(K, K, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ Q.T
    # a coupling that is not orthogonal (nor symmetric): singular values 0.5..2.5 between two random rotations
    U, _ = torch.linalg.qr(torch.randn(K, K, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(K, K, generator=g, dtype=torch.float64))
    B = U @ torch.diag(torch.tensor([0.5, 0.8, 1.0, 1.6, 2.5], dtype=torch.float64)) @ V.T
    c = torch.randn(K, generator=g, dtype=torch.float64)
    d = torch.zeros(K, dtype=torch.float64) if d_zero else torch.randn(K, generator=g, dtype=torch.float64)
    torch.manual_seed(seed)
    return Quadratic(A, B, c, d)


def amended(model: Supernet, batches: Batches, loss, **overrides) -> torch.Tensor:
    """The amended gradient of `model`, starting from the direct gradient grad_alpha L_val (first order)."""
    node = OmegaConf.merge(OmegaConf.load(nasctl.conf_dir() / "stabilizer" / "amended.yaml"), overrides)
    direct = list(torch.autograd.grad(loss(batches.x_val, batches.y_val), model.arch_parameters()))
    grads = Stabilizers({"amended": node}).arch_grad(model, direct, batches, loss)
    return torch.cat([g.flatten() for g in grads])


TOY = Batches(TRAIN, None, VAL, None)
SPECTRUM = [0.3, 0.7, 1.5, 4.0, 9.0]


@pytest.mark.parametrize("seed", range(3))
def test_cg_with_k_steps_matches_the_exact_ift_hypergradient(seed):
    model = problem(seed, SPECTRUM)
    exact = model.exact_hypergradient()
    first_order = model.d
    assert not torch.allclose(first_order, exact, atol=1e-3)  # the implicit term matters
    got = amended(model, TOY, model.loss, eta=1.0, inverse="cg_k", cg_steps=K)
    assert torch.allclose(got, exact, atol=1e-9)
    one_step = amended(model, TOY, model.loss, eta=1.0, inverse="cg_k", cg_steps=1)
    assert (one_step - exact).norm() > 1e3 * (got - exact).norm()


@pytest.mark.parametrize("seed", range(5))
def test_hessian_and_identity_amendments_are_exact_and_keep_the_weight_space_half_space(seed):
    model = problem(seed, SPECTRUM, d_zero=True)  # only the implicit term: exact = B'A^-1 v
    assert not torch.allclose(model.B @ model.B.T, torch.eye(K, dtype=torch.float64), atol=0.1)
    v = model.w.detach() - model.c  # grad_w L_val
    for inverse, M in (("hessian", model.A), ("identity", torch.eye(K, dtype=torch.float64))):
        got = amended(model, TOY, model.loss, eta=0.01, inverse=inverse)
        assert torch.allclose(got, 0.01 * model.B.T @ M @ v, atol=1e-12)  # eta B' M v: no transpose slipped
        # the paper's guarantee is in weight space: u = M v (recovered through B') has u . H^-1 v > 0,
        # (Hv).(H^-1 v) = |v|^2 for M = H. Through a non-orthogonal B' it need not hold for alpha.
        u = torch.linalg.solve(model.B.T, got / 0.01)
        inner = float(u @ torch.linalg.solve(model.A, v))
        assert inner > 0
        if inverse == "hessian":
            assert inner == pytest.approx(float(v @ v), rel=1e-9)


def test_cg_freezes_at_negative_curvature_instead_of_blowing_up():
    model = problem(0, [-1.0, 0.5, 1.0, 2.0, 3.0])
    got = amended(model, TOY, model.loss, eta=1.0, inverse="cg_k", cg_steps=20)
    assert torch.isfinite(got).all()


def test_on_a_supernet_the_identity_term_is_the_mixed_second_derivative_along_grad_w_val():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        ops = ["none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"]
        cfg = darts_space(ops=ops, C=2, layers=3, steps=2, multiplier=2)
        model = DartsSupernet(cfg, num_classes=3, in_channels=1)
        smooth(model)
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
        b = Batches(x[:8], y[:8], x[8:], y[8:])
        loss = lambda x, y: F.cross_entropy(model(x), y)
        weights, alphas = model.weight_parameters(), model.arch_parameters()
        v = torch.autograd.grad(loss(b.x_val, b.y_val), weights)
        direct = torch.cat([g.flatten() for g in torch.autograd.grad(loss(b.x_val, b.y_val), alphas)])

        def grad_alpha_train_at(r: float) -> torch.Tensor:
            with torch.no_grad():
                for w, u in zip(weights, v):
                    w.add_(r * u)
            g = torch.cat([t.flatten() for t in torch.autograd.grad(loss(b.x_train, b.y_train), alphas)])
            with torch.no_grad():
                for w, u in zip(weights, v):
                    w.sub_(r * u)
            return g

        r = 1e-5
        mixed = (grad_alpha_train_at(r) - grad_alpha_train_at(-r)) / (2 * r)  # grad2_{a,w} L_tr . v
        got = amended(model, b, loss, eta=0.1, inverse="identity")
        assert torch.allclose(got, direct - 0.1 * mixed, rtol=1e-5, atol=1e-8)
    finally:
        torch.set_default_dtype(prev)
