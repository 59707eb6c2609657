"""The DARTS architecture step: the second-order finite-difference hypergradient against autograd."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.func import functional_call

import nasctl
from nasctl.search import architect
from nasctl.search.architect import Architect
from nasctl.spaces.darts import DartsSupernet
from nasctl.stabilizers import Batches, Stabilizers
from tests.conftest import darts_space

XI, MU, WD = 0.05, 0.9, 3e-4


def smooth(module: torch.nn.Module) -> None:
    """Swap ReLU for Softplus: finite differences need a loss that is smooth in the weights."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.ReLU):
            setattr(module, name, torch.nn.Softplus(beta=4.0))
        else:
            smooth(child)


def build(wd: float = WD, nesterov: bool = False):
    """The smooth float64 toy after one weight step (so the momentum buffer the unroll uses is not zero)."""
    torch.manual_seed(0)
    cfg = darts_space(ops=["none", "skip_connect", "avg_pool_3x3", "sep_conv_3x3"], C=2, layers=3, steps=2, multiplier=2)
    model = DartsSupernet(cfg, num_classes=3, in_channels=1)
    smooth(model)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=XI, momentum=MU, weight_decay=wd, nesterov=nesterov)
    b = Batches(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)), torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    F.cross_entropy(model(b.x_train), b.y_train).backward()
    w_opt.step()
    w_opt.zero_grad()
    return model, w_opt, b


@pytest.fixture
def double():
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(prev)


@pytest.fixture
def setup(double):
    return build()


def make_architect(model, w_opt, order: str) -> Architect:
    return Architect(model, w_opt, order, Stabilizers({}), 3e-4, (0.5, 0.999), 1e-3, contextlib.nullcontext)


def exact_hypergradient(model, w_opt, b: Batches, wd: float = WD, nesterov: bool = False) -> list[torch.Tensor]:
    """d/d alpha of L_val(w'(alpha), alpha) by autograd, w' = w - xi (mu m + grad_w L_tr + wd w) or,
    with Nesterov, w - xi (d + mu (mu m + d)) with d = grad_w L_tr + wd w."""
    names = [n for n, _ in model.named_parameters() if not n.startswith("alphas.")]
    weights = [model.get_parameter(n) for n in names]
    alphas = model.arch_parameters()
    buffers = {n: t.clone() for n, t in model.named_buffers()}
    g = torch.autograd.grad(F.cross_entropy(model(b.x_train), b.y_train), weights, create_graph=True)
    d = [gi + wd * w for w, gi in zip(weights, g)]
    buf = [MU * w_opt.state[w]["momentum_buffer"] + di for w, di in zip(weights, d)]
    step = [di + MU * bi for di, bi in zip(d, buf)] if nesterov else buf
    unrolled = {n: w - XI * si for n, w, si in zip(names, weights, step)}
    params = {**unrolled, **{f"alphas.{k}": a for k, a in model.alphas.items()}, **buffers}
    loss = F.cross_entropy(functional_call(model, params, (b.x_val,)), b.y_val)
    return list(torch.autograd.grad(loss, alphas, materialize_grads=True))


def rel_err(got: list[torch.Tensor], exact: list[torch.Tensor]) -> float:
    diff = torch.cat([(g - e).flatten() for g, e in zip(got, exact)])
    return float(diff.norm() / torch.cat([e.flatten() for e in exact]).norm())


def test_second_order_matches_autograd(setup):
    model, w_opt, b = setup
    before = [p.detach().clone() for p in model.weight_parameters()]
    approx = make_architect(model, w_opt, "second").second_order(b, XI)
    after = [p.detach() for p in model.weight_parameters()]
    assert all(torch.equal(x, y) for x, y in zip(before, after)), "weights must be restored exactly"
    exact = exact_hypergradient(model, w_opt, b)
    first = make_architect(model, w_opt, "first").first_order(b)

    # the finite difference is O(r^2) accurate; the second-order term itself is far larger
    assert rel_err(approx, exact) < 5e-3
    assert rel_err(first, exact) > 20 * rel_err(approx, exact)


@pytest.mark.parametrize("nesterov", [False, True])
def test_the_unroll_is_the_weight_optimizers_own_step(double, nesterov):
    model, w_opt, b = build(wd=0.1, nesterov=nesterov)
    weights = model.weight_parameters()
    g = torch.autograd.grad(F.cross_entropy(model(b.x_train), b.y_train), weights)
    got, scale = make_architect(model, w_opt, "second").unroll(weights, g, XI)
    assert scale == pytest.approx(XI * (1 + MU) if nesterov else XI)
    for w, gi in zip(weights, g):
        w.grad = gi
    w_opt.step()  # torch's SGD, the step the unroll stands for
    assert all(torch.allclose(u, w, rtol=0, atol=1e-15) for u, w in zip(got, weights))


@pytest.mark.parametrize("nesterov", [False, True])
def test_second_order_sees_a_weight_decay_large_enough_to_matter(double, nesterov):
    model, w_opt, b = build(wd=0.3, nesterov=nesterov)
    approx = make_architect(model, w_opt, "second").second_order(b, XI)
    exact = exact_hypergradient(model, w_opt, b, wd=0.3, nesterov=nesterov)
    assert rel_err(approx, exact) < 5e-3
    for wrong in (dict(wd=0.0, nesterov=nesterov), dict(wd=0.3, nesterov=not nesterov)):
        assert rel_err(exact_hypergradient(model, w_opt, b, **wrong), exact) > 10 * rel_err(approx, exact)


def test_first_order_is_val_gradient(setup):
    model, w_opt, b = setup
    arch = make_architect(model, w_opt, "first")
    got = arch.first_order(b)
    want = torch.autograd.grad(F.cross_entropy(model(b.x_val), b.y_val), model.arch_parameters(), materialize_grads=True)
    assert all(torch.allclose(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("order", ["first", "second"])
def test_step_moves_alphas_only(setup, order):
    model, w_opt, b = setup
    alphas0 = [a.detach().clone() for a in model.arch_parameters()]
    weights0 = [p.detach().clone() for p in model.weight_parameters()]
    make_architect(model, w_opt, order).step(b, XI)
    assert all(not torch.equal(a0, a) for a0, a in zip(alphas0, model.arch_parameters()))
    assert all(torch.equal(w0, w) for w0, w in zip(weights0, model.weight_parameters()))


# -- randomness in the finite difference ------------------------------------------------------
def random_setup(noisy: bool):
    """The smooth toy with search drop-path, S4's `noise` op and (optionally) NoisyDARTS on the skips."""
    ops = ["noise", "skip_connect", "sep_conv_3x3"]
    model = DartsSupernet(darts_space(ops=ops, C=2, layers=3, steps=2, multiplier=2), num_classes=3, in_channels=1)
    smooth(model)
    model.set_drop_path(0.3)
    if noisy:
        node = OmegaConf.load(nasctl.conf_dir() / "stabilizer" / "noisy.yaml")
        Stabilizers({"noisy": node}).configure(model)
    model.train()
    weights = model.weight_parameters()
    g = torch.Generator().manual_seed(7)
    v = [torch.randn(w.shape, generator=g, dtype=w.dtype) for w in weights]
    w_opt = torch.optim.SGD(weights, lr=XI, momentum=MU, weight_decay=WD)
    return model, make_architect(model, w_opt, "second"), weights, v


def mixed_estimate(arch: Architect, b: Batches, weights, v, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.cat([t.flatten() for t in arch._mixed_hvp(b, weights, v)])


def test_the_two_finite_difference_passes_see_the_same_drop_path_masks_and_noise(setup):
    _, _, b = setup
    model, arch, weights, v = random_setup(noisy=False)
    got = mixed_estimate(arch, b, weights, v, seed=11)
    torch.manual_seed(11)  # the same draws in one forward: the exact mixed derivative of that realisation
    g_w = torch.autograd.grad(F.cross_entropy(model(b.x_train), b.y_train), weights, create_graph=True, materialize_grads=True)
    exact = torch.autograd.grad(sum((g * u).sum() for g, u in zip(g_w, v)), model.arch_parameters())
    exact = torch.cat([t.flatten() for t in exact])
    assert float((got - exact).norm() / exact.norm()) < 1e-3  # fresh draws per pass: ~100x off


def test_two_estimates_from_one_state_agree_with_noisy_darts_noise_on(setup, monkeypatch):
    _, _, b = setup
    _, arch, weights, v = random_setup(noisy=True)
    one = mixed_estimate(arch, b, weights, v, seed=3)
    assert torch.equal(one, mixed_estimate(arch, b, weights, v, seed=3))
    monkeypatch.setattr(architect, "FD_RADIUS", architect.FD_RADIUS / 2)  # a second estimate, half the radius
    half = mixed_estimate(arch, b, weights, v, seed=3)
    assert float((one - half).norm() / one.norm()) < 1e-3  # one function, O(r^2) apart; fresh draws: ~100 % apart


@pytest.mark.parametrize("order", ["first", "second"])
def test_the_arch_loss_gradient_is_added_with_its_sign_in_both_orders(setup, order):
    model, w_opt, b = setup
    node = OmegaConf.merge(OmegaConf.load(nasctl.conf_dir() / "stabilizer" / "beta_decay.yaml"), {"ramp_epochs": 10})
    hooks = Stabilizers({"beta_decay": node})
    hooks.on_epoch_start(model, 4, 10)  # lambda = 50 * 4 / 10 = 20: the term dominates the gradient
    arch = Architect(model, w_opt, order, hooks, 3e-4, (0.5, 0.999), 1e-3, contextlib.nullcontext)
    alphas = model.arch_parameters()
    plain = arch.first_order(b) if order == "first" else arch.second_order(b, XI)
    rows = sum(a.shape[0] for a in alphas)
    want = [g + 20.0 * torch.softmax(a.detach(), -1) / rows for g, a in zip(plain, alphas)]  # d(lambda L_beta)/d alpha
    arch.step(b, XI)
    assert all(torch.allclose(a.grad, w, rtol=1e-6, atol=1e-12) for a, w in zip(alphas, want))
