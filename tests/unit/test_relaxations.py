"""Relaxations on toy tensors: PC-DARTS's channel split, shuffle and edge normalisation, GDAS's
straight-through Gumbel sample and one-op forward, DrNAS's Dirichlet draw and KL regulariser."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

import nasctl
from nasctl.config import register_schemas
from nasctl.errors import NasctlError
from nasctl.genotype import CellGenotype
from nasctl.relaxations import RELAXATIONS, EdgeMix, build_relaxation
from nasctl.relaxations.drnas import kl_to_uniform
from nasctl.relaxations.gdas import SampledOne, gumbel_hard
from nasctl.relaxations.pc_darts import channel_shuffle, edge_weights
from nasctl.spaces import space_config
from nasctl.spaces.ops import EdgeInput

CONF = nasctl.conf_dir()
DARTS_OPS = list(OmegaConf.load(CONF / "space" / "darts.yaml").ops)


def supernet(relaxation: str, space: str = "darts", **overrides):
    """A tiny supernet of `space` with `relaxation` (its conf/ defaults and `overrides`) attached."""
    node = OmegaConf.merge(OmegaConf.load(CONF / "space" / f"{space}.yaml"),
                           {"C": 8, **({"layers": 3} if space == "darts" else {"N": 1})})
    sp, scfg = space_config(node)
    torch.manual_seed(0)
    model = sp.build(scfg, 10, 1)
    r = build_relaxation(OmegaConf.merge(OmegaConf.load(CONF / "relaxation" / f"{relaxation}.yaml"), overrides),
                         sp.node_edges(scfg))
    r.attach(model)
    return model, r, sp, scfg


def test_every_relaxation_is_registered_with_a_config():
    assert RELAXATIONS.names() == sorted(p.stem for p in (CONF / "relaxation").glob("*.yaml"))


# -- PC-DARTS -----------------------------------------------------------------------------------
def test_channel_shuffle_is_the_k_group_permutation():
    x = torch.arange(12.0).view(1, 12, 1, 1)
    y = channel_shuffle(x, 4).flatten().tolist()
    assert sorted(y) == list(range(12))  # a permutation
    assert y == [0, 3, 6, 9, 1, 4, 7, 10, 2, 5, 8, 11]  # channel g * 3 + i -> position i * 4 + g


def test_partial_edge_runs_its_candidates_on_the_first_quarter_and_bypasses_the_rest():
    model, _, _, _ = supernet("pc_darts")
    edge = model.cells[0].edges[0]  # stride 1, 8 channels: 2 go through the candidates
    assert edge.C == 8 and all(p.shape[0] in (2, 1) for p in edge.ops.parameters() if p.dim() == 4)
    x = torch.randn(2, 8, 6, 6)
    skip = EdgeMix(torch.eye(len(DARTS_OPS))[DARTS_OPS.index("skip_connect")])
    assert torch.equal(edge(x, skip), channel_shuffle(x, 4))  # identity on the part: a pure permutation
    conv = EdgeMix(torch.eye(len(DARTS_OPS))[DARTS_OPS.index("sep_conv_3x3")])
    out = edge(x, conv)
    where = channel_shuffle(torch.arange(8.0).view(1, 8, 1, 1), 4).flatten().long().tolist()
    pos = {c: i for i, c in enumerate(where)}
    assert all(torch.equal(out[:, pos[c]], x[:, c]) for c in range(2, 8))  # bypassed channels untouched
    assert torch.allclose(out[:, [pos[0], pos[1]]], edge.ops[DARTS_OPS.index("sep_conv_3x3")](x[:, :2]))


def test_partial_reduction_edge_max_pools_the_bypass_and_the_scale_spares_the_aux_branch():
    model, _, _, _ = supernet("pc_darts")
    edge = model.cells[1].edges[0]  # the first reduction cell's stride-2 edge (16 channels)
    assert edge.stride == 2
    x = torch.randn(2, 16, 6, 6)
    out = edge(x, EdgeMix(torch.zeros(len(DARTS_OPS))))  # mixture = 0: only the bypass is left
    pooled = torch.nn.functional.max_pool2d(x[:, 4:], 2, 2)
    assert torch.equal(out, channel_shuffle(torch.cat([torch.zeros(2, 4, 3, 3), pooled], 1), 4))
    plain = model.cells[0].edges[0]
    x8 = torch.randn(2, 8, 4, 4)
    w = torch.softmax(torch.randn(len(DARTS_OPS)), -1)
    base = plain(x8, EdgeMix(w))
    assert torch.allclose(plain(x8, EdgeMix(w, torch.tensor(0.25))), 0.25 * base)
    plain.aux = nn.Identity()  # DARTS-'s branch: added after the edge scale, on every channel
    assert torch.allclose(plain(x8, EdgeMix(w, torch.tensor(0.25))), 0.25 * base + x8)


def test_edge_weights_are_a_softmax_over_each_nodes_inputs():
    beta = torch.tensor([0.0, math.log(3.0), 1.0, 1.0, 1.0])
    w = edge_weights(beta, [[0, 1], [2, 3, 4]])
    assert torch.allclose(w, torch.tensor([0.25, 0.75, 1 / 3, 1 / 3, 1 / 3]))


def test_pc_darts_derive_ranks_edges_by_softmax_alpha_times_softmax_beta():
    _, r, sp, scfg = supernet("pc_darts")
    alpha = torch.zeros(14, 8)
    conv, pool = DARTS_OPS.index("sep_conv_3x3"), DARTS_OPS.index("max_pool_3x3")
    alpha[:, conv] = 2.0  # every edge: sep_conv strongest, equally strong
    alpha[1, pool] = alpha[1, conv] = 3.0  # node 2: input 1 strongest in softmax(alpha) ...
    alpha[1, pool] = 3.5
    beta = torch.zeros(14)
    beta[1] = -5.0  # ... but node 2's edge normalisation nearly switches input 1 off
    params = {"normal": alpha, "reduce": alpha, "beta_normal": beta, "beta_reduce": torch.zeros(14)}
    g = sp.derive(r.scores(params), scfg)
    assert isinstance(g, CellGenotype)
    assert g.normal[:2] == (("sep_conv_3x3", 0), ("max_pool_3x3", 1))  # both kept (2 inputs), best op per edge
    # node 3 (rows 2-4) with beta favouring row 4 (input 2) and row 3 (input 1) over row 2 (input 0)
    beta = torch.zeros(14)
    beta[2] = -3.0
    params["beta_normal"] = beta
    g = sp.derive(r.scores(params), scfg)
    assert sorted(j for _, j in g.normal[2:4]) == [1, 2]
    plain = sp.derive({k: torch.softmax(params[k], -1) for k in ("normal", "reduce")}, scfg)
    assert sorted(j for _, j in plain.normal[2:4]) == [0, 1]  # without beta the ties go to the lower inputs


def test_pc_darts_freezes_the_architecture_for_the_warmup_fraction():
    _, r, _, _ = supernet("pc_darts")
    assert [e for e in range(50) if r.arch_frozen(e, 50)] == list(range(15))  # PC: epoch >= 15 of 50
    assert [r.arch_frozen(e, 4) for e in range(4)] == [True, False, False, False]


def test_pc_darts_owns_beta_as_architecture_parameters():
    model, r, _, _ = supernet("pc_darts")
    arch = model.arch_parameters()
    assert [tuple(p.shape) for p in arch] == [(14, 8), (14, 8), (14,), (14,)]
    assert not {id(p) for p in arch} & {id(p) for p in model.weight_parameters()}
    assert set(r.params(model)) == {"normal", "reduce", "beta_normal", "beta_reduce"}
    model(torch.randn(2, 1, 8, 8)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in arch)


def test_pc_darts_refuses_widths_that_do_not_split():
    with pytest.raises(NasctlError, match="divisible"):
        supernet("pc_darts", partial_channels=3)


# -- GDAS ---------------------------------------------------------------------------------------
def test_gumbel_hard_is_one_hot_with_the_soft_straight_through_gradient():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(6, 5, dtype=torch.float64)
    torch.manual_seed(3)
    h = gumbel_hard(logits, 0.7)
    torch.manual_seed(3)
    g = -torch.empty_like(logits).exponential_().log()
    p = torch.softmax((logits.log_softmax(-1) + g) / 0.7, -1)
    assert torch.allclose(h.detach(), torch.nn.functional.one_hot(p.argmax(-1), 5).double())
    assert (h.detach() == 0).sum() == 6 * 4  # the unsampled weights are exactly zero
    (gh,) = torch.autograd.grad((h * v).sum(), logits)
    (gp,) = torch.autograd.grad((p * v).sum(), logits)
    assert torch.allclose(gh, gp)


def test_gumbel_hard_draws_each_op_with_probability_softmax_alpha_at_any_temperature():
    torch.manual_seed(0)
    logits = torch.tensor([0.0, 1.0, -1.0, 2.0])
    draws = torch.stack([gumbel_hard(logits.expand(1000, 4), 5.0).argmax(-1) for _ in range(20)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(freq, torch.softmax(logits, -1), atol=0.01)


def test_gdas_forward_runs_only_the_sampled_op_of_each_edge():
    model, r, _, _ = supernet("gdas", space="nb201")
    calls: list[tuple[int, int]] = []
    edges = list(model.mixed_ops())
    for e, m in enumerate(edges):
        for o, op in enumerate(m.ops):
            op.register_forward_hook(lambda *_, e=e, o=o: calls.append((e, o)))
    x = torch.randn(2, 1, 8, 8)
    torch.manual_seed(1)
    w = model.mixing()["cell"]
    torch.manual_seed(1)
    model(x)
    picks = w.argmax(-1).tolist()
    assert sorted(calls) == sorted((e, picks[e % 6]) for e in range(len(edges)))  # one op per edge, the sampled one


def test_sampled_edge_gradient_flows_through_the_sampled_weight_only():
    model, _, _, _ = supernet("gdas", space="nb201")
    m = next(model.mixed_ops())
    logits = torch.randn(5, requires_grad=True)
    k = 3

    def hard() -> torch.Tensor:
        p = torch.softmax(logits / 2.0, -1)
        return torch.nn.functional.one_hot(torch.tensor(k), 5).float() - p.detach() + p

    p = torch.softmax(logits / 2.0, -1)
    x = torch.randn(2, 8, 4, 4)
    (g,) = torch.autograd.grad(SampledOne(False)(m, EdgeInput(x), EdgeMix(hard(), pick=k)).sum(), logits)
    s, p = m.ops[k](x).sum().detach(), p.detach()
    expected = s * p[k] * (torch.eye(5)[k] - p) / 2.0  # d p_k / d alpha = p_k (delta - p) / tau
    assert torch.allclose(g, expected, rtol=1e-4, atol=1e-6)
    # AD's NB201 cell: the other weights are added as zero-valued scalars, each getting sum(upstream) = numel
    (g2,) = torch.autograd.grad(SampledOne(True)(m, EdgeInput(x), EdgeMix(hard(), pick=k)).sum(), logits)
    n = float(x.numel())
    J = torch.diag(p) - torch.outer(p, p)  # softmax Jacobian (times tau)
    up = torch.full((5,), n)
    up[k] = s
    assert torch.allclose(g2, J @ up / 2.0, rtol=1e-4, atol=1e-4)


def test_gdas_temperature_falls_linearly_from_tau_max_to_tau_min():
    _, r, _, _ = supernet("gdas", space="nb201")
    taus = [r.on_epoch_start(e, 250)["gdas_tau"] for e in range(250)]
    assert taus[0] == 10.0 and taus[-1] == 0.1
    assert taus[125] == pytest.approx(10 - 9.9 * 125 / 249)
    assert r.on_epoch_start(0, 1)["gdas_tau"] == 10.0  # a one-epoch run


def test_gdas_refuses_what_needs_soft_weights_or_the_hessian():
    _, r, _, _ = supernet("gdas", space="nb201")
    for setting, need in [("stabilizer=sdarts_rs", "mixing_weights"), ("search.order=second", "arch_hessian")]:
        with pytest.raises(NasctlError, match=setting.replace(".", r"\.")):
            r.refuse([(setting, need)])
    r.refuse([("stabilizer=darts_minus", "nothing")])  # the others run


# -- DrNAS --------------------------------------------------------------------------------------
def drnas(alpha: torch.Tensor):
    r = build_relaxation(OmegaConf.load(CONF / "relaxation" / "drnas.yaml"), {"cell": [[0]]})
    return r, SimpleNamespace(alphas={"cell": alpha})


def test_drnas_samples_lie_on_the_simplex_with_the_dirichlet_mean():
    torch.manual_seed(0)
    alpha = torch.tensor([[0.5, -0.3, 1.2, 0.0]])
    r, model = drnas(alpha)
    w = torch.cat([r.mixing(model)["cell"] for _ in range(4000)])
    c = torch.nn.functional.elu(alpha[0]) + 1
    assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-6)
    assert torch.allclose(w.mean(0), c / c.sum(), atol=0.01)
    assert not torch.equal(w[0], w[1])  # a fresh draw per forward
    with r.deterministic():
        assert torch.allclose(r.mixing(model)["cell"][0], c / c.sum())


def test_drnas_pathwise_gradient_is_the_gradient_of_the_mean():
    torch.manual_seed(1)
    alpha = torch.tensor([[0.4, -0.2, 0.9]], requires_grad=True)
    r, model = drnas(alpha)
    total = sum(r.mixing(model)["cell"][0, 0] for _ in range(6000)) / 6000
    (g,) = torch.autograd.grad(total, alpha)
    c = torch.nn.functional.elu(alpha) + 1
    (expected,) = torch.autograd.grad((c / c.sum())[0, 0], alpha)
    assert torch.allclose(g, expected, atol=0.01)


def test_drnas_kl_to_the_uniform_prior_by_hand():
    alpha = torch.tensor([[0.3, -0.5, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)

    def by_hand(a: torch.Tensor) -> torch.Tensor:
        c = torch.where(a > 0, a, torch.expm1(a)) + 1
        s = c.sum(-1)
        kl = torch.lgamma(s) - torch.lgamma(c).sum(-1) - math.lgamma(3) + ((c - 1) * (torch.digamma(c) - torch.digamma(s)[:, None])).sum(-1)
        return kl.sum()

    assert torch.allclose(kl_to_uniform(alpha), by_hand(alpha))
    assert float(kl_to_uniform(torch.zeros(2, 3))) == pytest.approx(0.0, abs=1e-6)  # c = 1 is the prior
    (g,) = torch.autograd.grad(kl_to_uniform(alpha), alpha)
    eps = 1e-6
    fd = torch.zeros_like(alpha)
    for i in range(2):
        for j in range(3):
            d = torch.zeros_like(alpha)
            d[i, j] = eps
            fd[i, j] = (by_hand(alpha + d) - by_hand(alpha - d)) / (2 * eps)
    assert torch.allclose(g, fd, atol=1e-6)
    r = build_relaxation(OmegaConf.merge(OmegaConf.load(CONF / "relaxation" / "drnas.yaml"), {"kl_scale": 0.5}),
                         {"cell": [[0]]})
    assert torch.allclose(r.arch_loss(SimpleNamespace(alphas={"cell": alpha})), 0.5 * by_hand(alpha))


def test_drnas_supernet_mixes_a_fresh_draw_in_every_forward():
    model, _, _, _ = supernet("drnas", space="nb201")
    x = torch.randn(2, 1, 8, 8)
    model.eval()
    assert not torch.equal(model(x), model(x))
    with model.relaxation.deterministic():
        assert torch.equal(model(x), model(x))


# -- every relaxation on every space --------------------------------------------------------------
@pytest.mark.parametrize("space", ["darts", "s1", "s2", "s3", "s4", "nb201"])
@pytest.mark.parametrize("relaxation", ["darts", "pc_darts", "gdas", "drnas"])
def test_every_relaxation_trains_and_derives_on_every_space(relaxation, space):
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("search", overrides=[f"space={space}", f"relaxation={relaxation}", "space.C=4",
                                           "space.N=1" if space == "nb201" else "space.layers=3"])
    sp, scfg = space_config(cfg.space)
    torch.manual_seed(0)
    model = sp.build(scfg, 10, 1)
    r = build_relaxation(cfg.relaxation, sp.node_edges(scfg))
    r.attach(model)
    x, y = torch.randn(4, 1, 8, 8), torch.randint(0, 10, (4,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    arch = model.arch_parameters()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in arch)
    assert sum(p.grad is not None and p.grad.abs().sum() > 0 for p in model.weight_parameters()) > 0
    g = sp.derive(r.scores(r.params(model)), scfg)
    assert g.space == space
