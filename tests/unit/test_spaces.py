"""What every registered search space promises, checked for each one in the registry (a new space is covered)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from nasctl import conf_dir
from nasctl import genotype as G
from nasctl.config import register_schemas
from nasctl.spaces import SPACES, space_config


def small(name: str):
    """The registered space `name` at the quickstart preset's widths, 4 channels."""
    register_schemas()
    with initialize_config_dir(str(conf_dir()), version_base=None):
        cfg = compose("search", overrides=[f"space={name}", "experiment=quickstart", "space.C=4"])
    return space_config(cfg.space)


@pytest.mark.parametrize("name", SPACES.names())
def test_search_drop_path_acts_in_train_mode_only(name):
    torch.manual_seed(0)
    space, cfg = small(name)
    net = space.build(cfg, 10, 1).train()
    if any("noise" in row for rows in net.edge_ops.values() for row in rows):
        pytest.skip("the space's `noise` op is random by itself (RobustDARTS S4)")
    x = torch.randn(8, 1, 8, 8)
    assert torch.equal(net(x), net(x))
    net.set_drop_path(0.5)
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", SPACES.names())
def test_derive_gives_the_spaces_genotype_type_and_it_round_trips(name):
    space, cfg = small(name)
    net = space.build(cfg, 10, 1)
    g = space.derive({k: torch.randn_like(a) for k, a in net.alphas.items()}, cfg)
    assert type(g) is space.genotype and g.space == name
    assert G.parse(G.dumps(g)) == g and G.parse(str(g)).to_dict() | {"space": name} == g.to_dict()


@pytest.mark.parametrize("name", SPACES.names())
def test_edge_labels_name_every_alpha_row_and_its_ops(name):
    space, cfg = small(name)
    net = space.build(cfg, 10, 1)
    labels = space.edge_labels(cfg)
    assert labels.keys() == net.alphas.keys()
    for cell, rows in labels.items():
        assert [ops for _, ops in rows] == net.edge_ops[cell]
        assert len({edge for edge, _ in rows}) == len(rows)  # each row its own `from→to`


@pytest.mark.parametrize("name", SPACES.names())
def test_the_genotype_type_draws_counts_and_shortens_what_derive_gives(name):
    space, cfg = small(name)
    ops = space.build(cfg, 10, 1).edge_ops
    skip = {k: torch.tensor([[float(o == "skip_connect") for o in row] for row in rows]) for k, rows in ops.items()}
    g = space.derive(skip, cfg)  # every edge's strongest op is skip_connect where the edge has it
    first = next(iter(g.graphs().values()))
    drawn = [e for e in first[1] if e[2]]  # labelled edges of the first cell
    assert g.skip_count() == sum(op == "skip_connect" for *_, op in drawn)
    assert g.short().count(";") == len(g.short().split(";")) - 1 and g.rows()[1]
