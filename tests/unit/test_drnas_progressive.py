"""DrNAS's progressive learning on toy tensors: stage bounds and stage-local warm-up, pruning to the
top alphas, the masked Dirichlet draw, widening by copied filters with momentum grown alike."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nasctl.errors import NasctlError
from nasctl.relaxations import build_relaxation
from nasctl.relaxations.base import regrow
from nasctl.relaxations.drnas import prune
from nasctl.relaxations.widen import widen
from nasctl.spaces import space_config
from nasctl.spaces.ops import OPS
from tests.unit.test_relaxations import CONF

STAGES = {"k": [6, 4], "ops": [7, 4], "epochs": [0.5, 0.5], "warmup": 0.4}
NONONE = list(OmegaConf.load(CONF / "space" / "darts_nonone.yaml").ops)


def supernet(C: int, space_ops: list[str] = NONONE, **stages):
    """A 3-cell DARTS-space supernet of C channels with DrNAS progressive learning attached."""
    sp, scfg = space_config(OmegaConf.merge(OmegaConf.load(CONF / "space" / "darts.yaml"), {"C": C, "layers": 3, "ops": space_ops}))
    torch.manual_seed(0)
    model = sp.build(scfg, 10, 1)
    r = build_relaxation(OmegaConf.merge(OmegaConf.load(CONF / "relaxation" / "drnas.yaml"), progressive(**stages)),
                         sp.node_edges(scfg))
    r.attach(model)
    return model, r


def progressive(**stages):
    return {"progressive": {**STAGES, **stages}}


def test_stages_split_the_run_and_the_warmup_restarts_in_each():
    r = build_relaxation(OmegaConf.merge(OmegaConf.load(CONF / "relaxation" / "drnas.yaml"), progressive()), {})
    assert [r.stage_at(e, 50) for e in (0, 24, 25, 49)] == [0, 0, 1, 1]
    frozen = [e for e in range(50) if r.arch_frozen(e, 50)]
    assert frozen == [*range(10), *range(25, 35)]  # DR: `e >= 10` on the stage-local epoch
    assert [r.stage_at(e, 2) for e in (0, 1)] == [0, 1] and not r.arch_frozen(0, 2)  # any run length


def test_prune_keeps_each_rows_top_alphas_with_their_values():
    a = torch.tensor([[0.3, -1.0, 2.0, 0.1, -0.2], [-0.5, -0.4, -0.3, -0.2, -0.1]])
    keep = torch.ones_like(a, dtype=torch.bool)
    keep = prune(a, keep, 3)
    assert keep.tolist() == [[True, False, True, True, False], [False, False, True, True, True]]
    assert torch.equal(a, torch.tensor([[0.3, 0.0, 2.0, 0.1, 0.0], [0.0, 0.0, -0.3, -0.2, -0.1]]))
    a[0, 1] = 5.0  # a pruned entry that drifted stays pruned
    assert prune(a, keep, 2).tolist() == [[True, False, True, False, False], [False, False, False, True, True]]


def test_the_masked_draw_is_a_dirichlet_of_the_kept_concentrations():
    model, r = supernet(12, k=[2, 2], ops=[7, 3])
    with torch.no_grad():
        for a in model.alphas.values():
            a.copy_(torch.randn_like(a))
    r.enter_stage(model, 1)
    a, keep = model.alphas["normal"][0].detach().clone(), r.keep_normal[0].clone()
    assert int(keep.sum()) == 3
    torch.manual_seed(0)
    w = torch.stack([r.mixing(model)["normal"][0] for _ in range(6000)])
    assert (w[:, ~keep] == 0).all() and torch.allclose(w.sum(-1), torch.ones(len(w)), atol=1e-6)
    c = torch.nn.functional.elu(a[keep]) + 1
    c0 = c.sum()
    mean, var = c / c0, c * (c0 - c) / (c0**2 * (c0 + 1))  # the moments of Dir(c_kept)
    assert torch.allclose(w[:, keep].mean(0), mean, atol=0.01)
    assert torch.allclose(w[:, keep].var(0), var, rtol=0.1)
    with r.deterministic():
        assert torch.allclose(r.mixing(model)["normal"][0][keep], mean)
    scores = r.scores(r.params(model))["normal"][0]
    assert (scores[~keep] == 0).all() and torch.allclose(scores[keep], torch.softmax(a[keep], -1))


@pytest.mark.parametrize("name", ["sep_conv_3x3", "dil_conv_5x5", "skip_connect", "max_pool_3x3"])
def test_widening_copies_existing_filters_and_grows_momentum_alike(name):
    torch.manual_seed(0)
    op = OPS[name](3, 2, False)
    for p in op.parameters():
        p.data.normal_()
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
    before = {n: p.detach().clone() for n, p in op.named_parameters()}
    grown = widen(op, 5)
    y = op(torch.randn(2, 5, 8, 8))
    assert y.shape == (2, 5, 4, 4)  # 5 channels in and out
    for n, p in op.named_parameters():
        old = before[n]
        prev, plan = next(v for k, v in grown.items() if k is p)
        assert prev.shape == old.shape and torch.equal(p[tuple(slice(0, s) for s in old.shape)], old)  # old kept
        if old.dim() == 4:  # every new out-filter is an existing filter (its input columns grown alike)
            rows = regrow(old, plan[:-1])
            assert all(any(torch.equal(p[i], rows[j]) for j in range(rows.shape[0])) for i in range(old.shape[0], p.shape[0]))
        buf = torch.randn_like(old)
        assert torch.equal(regrow(buf, plan)[tuple(slice(0, s) for s in old.shape)], buf)
        assert torch.equal(regrow(old, plan), p.detach())  # the momentum plan is the weight's plan
    for m in op.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert m.running_mean.shape == (5,) and m.num_features == 5


def test_entering_a_stage_prunes_widens_and_keeps_the_optimizer_state_consistent():
    model, r = supernet(12, k=[4, 2], ops=[7, 4])
    edge = model.cells[0].edges[0]
    assert all(p.shape[0] in (3, 1) for p in edge.ops.parameters() if p.dim() == 4)
    opt = torch.optim.SGD(model.weight_parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(2, 1, 8, 8), torch.randint(0, 10, (2,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    grown = r.enter_stage(model, 1)
    assert grown and all(p.shape[0] in (6, 1) for p in edge.ops.parameters() if p.dim() == 4)
    assert (r.keep_normal.sum(-1) == 4).all() and (r.keep_reduce.sum(-1) == 4).all()
    for new, (old, plan) in grown.items():
        assert torch.equal(regrow(opt.state[old]["momentum_buffer"], plan)[tuple(slice(0, s) for s in old.shape)],
                           opt.state[old]["momentum_buffer"])
    torch.nn.functional.cross_entropy(model(x), y).backward()  # the widened supernet trains
    w = model.mixing()["normal"]
    assert (w[~r.keep_normal] == 0).all()


def test_progressive_refuses_bad_stage_lists_and_widths():
    with pytest.raises(NasctlError, match="progressive"):
        build_relaxation(OmegaConf.merge(OmegaConf.load(CONF / "relaxation" / "drnas.yaml"),
                                         progressive(epochs=[0.5, 0.6])), {})
    with pytest.raises(NasctlError, match="divisible"):
        supernet(8)
    with pytest.raises(NasctlError, match="whole op list"):
        supernet(12, list(OmegaConf.load(CONF / "space" / "darts.yaml").ops), k=[2, 2])


def test_the_paper_preset_stages_fit_its_evaluation_size_supernet_and_refuse_sdarts():
    from hydra import compose, initialize_config_dir

    from nasctl.config import register_schemas

    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("search", overrides=["experiment=paper/drnas"])
    sp, scfg = space_config(cfg.space)
    model = sp.build(scfg, 10, 3)
    r = build_relaxation(cfg.relaxation, sp.node_edges(scfg))
    r.attach(model)  # C = 36, 72, 144 split into 6 and into 4
    E = cfg.search.epochs
    assert [r.stage_at(e, E) for e in (E // 2 - 1, E // 2)] == [0, 1] and sum(r.arch_frozen(e, E) for e in range(E)) == 20
    with pytest.raises(NasctlError, match="pruned ops"):
        r.refuse([("stabilizer=sdarts_rs", "mixing_weights")])
