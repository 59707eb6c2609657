"""RobustDARTS S1-S4 (Zela et al. 2020) on the DARTS cell: op sets per edge, derivation, forward/backward."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from nasctl import conf_dir
from nasctl import genotype as G
from nasctl.config import register_schemas
from nasctl.spaces import space_config
from nasctl.spaces.ops import OPS

# RD src/spaces.py (methods.md section 7.1): S1's two candidate ops on each edge k, per cell type.
SKIP, SEP3, DIL3, DIL5, MAX, AVG = "skip_connect", "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5", "max_pool_3x3", "avg_pool_3x3"
S1 = {
    "normal": [[SKIP, DIL3], [SKIP, DIL5], [SKIP, DIL5], [SKIP, SEP3], [SKIP, DIL3], [MAX, SKIP], [SKIP, SEP3],
               [SKIP, SEP3], [SKIP, DIL3], [SKIP, SEP3], [MAX, SKIP], [SKIP, DIL3], [DIL3, DIL5], [DIL3, DIL5]],
    "reduce": [[MAX, AVG], [MAX, DIL3], [MAX, AVG], [MAX, AVG], [SKIP, DIL5], [MAX, AVG], [MAX, SEP3],
               [SKIP, DIL3], [SKIP, DIL5], [MAX, AVG], [MAX, AVG], [SKIP, DIL5], [SKIP, DIL5], [SKIP, DIL5]],
}
UNIFORM = {"s2": [SKIP, SEP3], "s3": ["none", SKIP, SEP3], "s4": ["noise", SEP3]}
# (node, input) of the 14 edges in alpha row order: node 2 <- 0,1; node 3 <- 0,1,2; ...
EDGE_INPUTS = [(i + 2, j) for i in range(4) for j in range(i + 2)]


def space(name: str, *overrides: str):
    """The registered space and its validated config, composed from conf/ as `nasctl search space=<name>`."""
    register_schemas()
    with initialize_config_dir(version_base="1.3", config_dir=str(conf_dir())):
        cfg = compose("search", overrides=[f"space={name}", *overrides])
    return space_config(cfg.space)


@pytest.mark.parametrize("name", ["s1", "s2", "s3", "s4"])
def test_alpha_shapes_and_op_names(name):
    sp, cfg = space(name, "space.C=4", "space.layers=3")
    net = sp.build(cfg, 10, 3)
    assert sp.genotype is G.CellGenotype and cfg.C == 4 and cfg.layers == 3 and cfg.steps == 4
    expected = S1 if name == "s1" else {k: [UNIFORM[name]] * 14 for k in ("normal", "reduce")}
    assert net.edge_ops == expected
    width = 3 if name == "s3" else 2
    assert {k: tuple(a.shape) for k, a in net.alphas.items()} == {"normal": (14, width), "reduce": (14, width)}
    for cell in net.cells:  # the mixed ops of each cell carry the op list of their edge and cell type
        ops = expected["reduce" if cell.reduction else "normal"]
        assert [edge.names for edge in cell.edges] == ops


def test_s4_noise_op_is_available_to_eval_networks():
    noise = OPS["noise"](4, 2, True)
    x = torch.randn(2, 4, 8, 8)
    y = noise(x)
    assert y.shape == (2, 4, 4, 4) and not torch.equal(y, noise(x))  # fresh N(0,1), input discarded


@pytest.mark.parametrize("name,channels,size", [("s1", 3, 32), ("s2", 1, 28), ("s3", 3, 16), ("s4", 1, 28)])
def test_forward_backward_tiny(name, channels, size):
    torch.manual_seed(0)
    sp, cfg = space(name, "space.C=4", "space.layers=3")
    net = sp.build(cfg, 10, channels)
    logits = net(torch.randn(2, channels, size, size))
    assert logits.shape == (2, 10)
    logits.logsumexp(1).mean().backward()
    for k, a in net.alphas.items():
        assert a.grad is not None and a.grad.abs().sum() > 0, k


def test_s1_derive_indexes_op_names_by_absolute_edge():
    sp, cfg = space("s1")
    # Normal: per node, the winning inputs are the first two and the second op wins; reduce: first op wins.
    normal = torch.zeros(14, 2)
    reduce = torch.zeros(14, 2)
    for k, (node, j) in enumerate(EDGE_INPUTS):
        if j < 2:
            normal[k] = torch.tensor([0.0, 3.0 - j])
            reduce[k] = torch.tensor([3.0 - j, 0.0])
    g = sp.derive({"normal": normal, "reduce": reduce}, cfg)
    assert isinstance(g, G.CellGenotype) and g.space == "s1"
    inputs = [k for k, (_, j) in enumerate(EDGE_INPUTS) if j < 2]
    assert list(g.normal) == [(S1["normal"][k][1], EDGE_INPUTS[k][1]) for k in inputs]
    assert list(g.reduce) == [(S1["reduce"][k][0], EDGE_INPUTS[k][1]) for k in inputs]
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_s1_derive_picks_deep_edges():
    sp, cfg = space("s1")
    normal = torch.zeros(14, 2)
    normal[12] = torch.tensor([0.0, 5.0])  # edge 12 = node 5 <- node 3: [dil_conv_3x3, dil_conv_5x5]
    normal[13] = torch.tensor([4.0, 0.0])  # edge 13 = node 5 <- node 4
    g = sp.derive({"normal": normal, "reduce": torch.zeros(14, 2)}, cfg)
    assert g.normal[6:] == ((DIL5, 3), (DIL3, 4))


def test_s3_derive_never_picks_none():
    sp, cfg = space("s3")
    alphas = torch.tensor([[5.0, 1.0, 0.0]] * 14)  # `none` strongest everywhere, skip next
    g = sp.derive({"normal": alphas, "reduce": alphas.flip(1)}, cfg)
    assert {op for op, _ in g.normal} == {SKIP} and {op for op, _ in g.reduce} == {SEP3}
    assert [j for _, j in g.normal] == [0, 1] * 4  # equal scores: the lower inputs win


def test_s4_derive_can_pick_noise_and_round_trips():
    sp, cfg = space("s4")
    g = sp.derive({"normal": torch.tensor([[1.0, 0.0]] * 14), "reduce": torch.tensor([[0.0, 1.0]] * 14)}, cfg)
    assert {op for op, _ in g.normal} == {"noise"} and {op for op, _ in g.reduce} == {SEP3}
    assert G.parse(G.dumps(g)) == g and g.space == "s4"
