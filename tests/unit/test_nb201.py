"""NAS-Bench-201: the search network, the argmax derivation into arch strings, and the table lookup."""

from __future__ import annotations

import csv
import importlib.util

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from nasctl import genotype as G
from nasctl.benchmarks import load_table, table_for
from nasctl.config import PathsConfig
from nasctl.errors import NasctlError
from nasctl.spaces import SPACES, MixedOp, space_config
from nasctl.spaces.nb201 import EDGES, Nb201Supernet, ResNetBlock, SearchCell
from tests.conftest import NB201_TABLE, REPO, require_nb201_table

OPS = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def nb201_cfg(**overrides):
    node = OmegaConf.merge(OmegaConf.load(REPO / "conf" / "space" / "nb201.yaml"), overrides)
    return space_config(node)


def one_hot_alphas(choice: list[int]) -> dict[str, torch.Tensor]:
    """Alphas whose argmax on edge k is op `choice[k]`."""
    a = torch.zeros(len(EDGES), len(OPS))
    a[range(len(EDGES)), choice] = 1.0
    return {"cell": a}


@pytest.fixture(scope="module")
def table():
    return load_table(require_nb201_table())


# -- the supernet -----------------------------------------------------------------------------
def test_alpha_column_k_derives_the_benchmark_op_named_by_conf_ops_k():
    space, cfg = nb201_cfg()
    for k, op in enumerate(cfg.ops):
        assert space.derive(one_hot_alphas([k] * len(EDGES)), cfg).ops == [op] * len(EDGES)
    assert list(cfg.ops) == OPS  # the reference search cell's op order (AutoDL NAS-Bench-201 search space)


def test_edge_rows_follow_the_benchmark_order():
    assert [f"{i}<-{j}" for i, j in EDGES] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]


def test_supernet_layout_alpha_and_ops():
    space, cfg = nb201_cfg(C=4, N=2)
    net = space.build(cfg, 10, 1)
    assert space.genotype is G.ArchString
    assert list(net.alphas) == ["cell"] and net.alphas["cell"].shape == (6, 5)
    assert net.edge_ops == {"cell": [OPS] * 6}
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["SearchCell"] * 2 + ["ResNetBlock"] + ["SearchCell"] * 2 + ["ResNetBlock"] + ["SearchCell"] * 2
    blocks = [m for m in net.layers if isinstance(m, ResNetBlock)]
    assert [(b.conv_a[1].in_channels, b.conv_a[1].out_channels, b.conv_a[1].stride) for b in blocks] == [
        (4, 8, (2, 2)), (8, 16, (2, 2))]
    assert net.classifier.in_features == 16
    edge = next(net.mixed_ops())
    assert edge.names == OPS
    assert [type(m) for m in edge.ops[4]] == [nn.AvgPool2d]  # NB201: no BN after the pooling
    relu, conv, bn = edge.ops[3]
    assert isinstance(relu, nn.ReLU) and conv.kernel_size == (3, 3) and not bn.affine and bn.track_running_stats
    cells = [m for m in net.layers if isinstance(m, SearchCell)]
    assert all(isinstance(e, MixedOp) for c in cells for e in c.edges) and len(cells[0].edges) == 6
    assert not any(p is net.alphas["cell"] for p in net.weight_parameters())


def test_forward_backward_reaches_alpha_and_weights():
    torch.manual_seed(0)
    space, cfg = nb201_cfg(C=4, N=1)
    net = space.build(cfg, 10, 3)
    logits = net(torch.randn(4, 3, 16, 16))
    assert logits.shape == (4, 10)
    logits.logsumexp(1).mean().backward()
    assert net.alphas["cell"].grad is not None and net.alphas["cell"].grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.stem.parameters())


def test_mixing_override_is_used_by_every_cell():
    torch.manual_seed(0)
    space, cfg = nb201_cfg(C=4, N=1)
    net = space.build(cfg, 10, 1).eval()
    x = torch.randn(2, 1, 28, 28)
    zero_cells = torch.zeros(6, 5)
    zero_cells[:, 0] = 1.0  # every edge `none`: each cell outputs zeros, only the ResNet blocks' shortcuts remain
    with net.mixing_override({"cell": zero_cells}):
        y_none = net(x)
    assert not torch.allclose(y_none, net(x))


def test_image_sides_must_survive_two_halvings():
    space, cfg = nb201_cfg(C=4, N=1)
    net = space.build(cfg, 10, 1)
    with pytest.raises(NasctlError, match="multiples of 4"):
        net(torch.randn(2, 1, 30, 30))


def test_unknown_op_is_a_clear_error():
    space, cfg = nb201_cfg(ops=["none", "sep_conv_3x3"])
    with pytest.raises(NasctlError, match="sep_conv_3x3"):
        space.build(cfg, 10, 1)


# -- derivation ----------------------------------------------------------------------------------
def test_derive_is_argmax_per_edge_in_edge_order():
    space, cfg = nb201_cfg()
    g = space.derive(one_hot_alphas([3, 1, 2, 4, 0, 3]), cfg)
    assert isinstance(g, G.ArchString) and g.space == "nb201"
    assert g.arch == "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|avg_pool_3x3~0|none~1|nor_conv_3x3~2|"


def test_derive_keeps_none_when_it_wins():
    space, cfg = nb201_cfg()
    alphas = one_hot_alphas([0] * 6)
    alphas["cell"][:, 3] = 0.999  # a close second everywhere: `none` still wins, unlike the DARTS rule
    assert space.derive(alphas, cfg).arch == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def test_derive_ties_go_to_the_first_op():
    space, cfg = nb201_cfg()
    assert space.derive({"cell": torch.zeros(6, 5)}, cfg).arch == "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    alphas = {"cell": torch.tensor([[0.0, 2.0, 2.0, 2.0, 1.0]] * 6)}
    assert space.derive(alphas, cfg).arch == ALL_SKIP


def test_derived_string_parses_and_round_trips():
    space, cfg = nb201_cfg()
    g = space.derive(one_hot_alphas([1, 1, 1, 1, 1, 1]), cfg)
    assert g.arch == ALL_SKIP
    assert G.parse(g.arch) == g and G.parse(G.dumps(g)) == g


# -- the benchmark table ------------------------------------------------------------------------
def test_table_has_every_architecture(table):
    assert len(table) == 5**6 == 15625


def test_best_cifar10_arch_is_the_column_max(table):
    best = max(table.rows, key=lambda arch: table.rows[arch][0])
    acc = table.accuracies(best)
    assert round(acc["cifar10"], 2) == 94.37
    assert acc["cifar10"] == max(table.accuracies(a)["cifar10"] for a in table.rows)
    assert round(max(r[1] for r in table.rows.values()), 2) == 73.51
    assert round(max(r[2] for r in table.rows.values()), 2) == 47.31


def test_all_skip_cell_is_the_collapse_anchor(table):
    acc = table.accuracies(ALL_SKIP)
    assert set(acc) == {"cifar10", "cifar100", "imagenet16_120"}
    assert [round(acc[d], 2) for d in ("cifar10", "cifar100", "imagenet16_120")] == [54.30, 15.61, 16.32]


def test_derived_arch_is_looked_up(table):
    space, cfg = nb201_cfg()
    best = max(table.rows, key=lambda arch: table.rows[arch][0])
    ops = [op.split("~")[0] for node in best.strip("|").split("|+|") for op in node.split("|")]
    g = space.derive(one_hot_alphas([OPS.index(o) for o in ops]), cfg)
    assert g.arch == best and round(table.accuracies(g.arch)["cifar10"], 2) == 94.37


def test_table_is_cached_per_path(table):
    assert load_table(str(NB201_TABLE)) is table


def test_table_for_only_nb201_with_a_configured_path(table):
    with_path = OmegaConf.structured(PathsConfig(run_root="runs", data="data", nb201=str(NB201_TABLE)))
    assert table_for(G.ArchString, with_path) is table
    assert table_for(G.CellGenotype, with_path) is None
    assert table_for(G.ArchString, OmegaConf.structured(PathsConfig(run_root="runs", data="data", nb201=None))) is None


def test_unknown_arch_names_the_table(table):
    with pytest.raises(NasctlError, match="nats_tss_test_acc_200ep.csv"):
        table.accuracies("|sep_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")


# -- broken tables --------------------------------------------------------------------------------
HEADER = ["CIFAR10TestAccuracy200Epochs", "CIFAR100TestAccuracy200Epochs", "ImageNetTestAccuracy200Epochs",
          "ArchitectureString", "UniqueString"]


def write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_missing_table_is_a_clear_error(tmp_path):
    with pytest.raises(NasctlError, match=r"missing\.csv does not exist.*paths\.nb201"):
        load_table(tmp_path / "missing.csv")


def test_wrong_columns_are_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "cols.csv", ["arch", "acc"], [[ALL_SKIP, "54.3"]])
    with pytest.raises(NasctlError, match=r"cols\.csv is not a NAS-Bench-201 accuracy table.*CIFAR10TestAccuracy200Epochs"):
        load_table(path)


def test_unparsable_number_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "num.csv", HEADER, [["54.3", "15.6", "16.3", ALL_SKIP, "x"], ["9x", "1", "1", "|a~0|", "y"]])
    with pytest.raises(NasctlError, match=r"num\.csv, line 3"):
        load_table(path)


def test_wrong_row_count_is_a_clear_error(tmp_path):
    path = write_csv(tmp_path / "short.csv", HEADER, [["54.3", "15.6", "16.3", ALL_SKIP, "x"]])
    with pytest.raises(NasctlError, match=r"short\.csv holds 1 distinct architectures.*15625"):
        load_table(path)


def test_binary_file_is_a_clear_error(tmp_path):
    path = tmp_path / "bin.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(NasctlError, match=r"bin\.csv"):
        load_table(path)


@pytest.mark.skipif(importlib.util.find_spec("nats_bench") is not None, reason="nats_bench is installed")
def test_official_file_without_nats_bench_says_how_to_install(tmp_path):
    path = tmp_path / "NATS-tss-v1_0-3ffb9.pickle.pbz2"
    path.write_bytes(b"not read")
    with pytest.raises(NasctlError, match=r"pip install nasctl\[nats\]"):
        load_table(path)


def test_space_is_registered():
    assert "nb201" in SPACES and SPACES.get("nb201").build is Nb201Supernet
