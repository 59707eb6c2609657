"""The DARTS evaluation networks: shapes, the auxiliary head, drop path and genotype checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from nasctl import genotype as G
from nasctl.errors import NasctlError
from nasctl.evalnet import build_eval_network, count_params, drop_path

CIFAR = SimpleNamespace(num_classes=10, channels=3, size=32)
FASHION = SimpleNamespace(num_classes=10, channels=1, size=28)
IMAGENET = SimpleNamespace(num_classes=1000, channels=3, size=224)
IMAGENET16 = SimpleNamespace(num_classes=120, channels=3, size=16)


def net(dataset: SimpleNamespace, genotype: G.CellGenotype = G.ZOO["darts_v2"], C: int = 4, layers: int = 5,
        stem: str = "cifar", auxiliary: bool = True) -> nn.Module:
    return build_eval_network(genotype, dataset, SimpleNamespace(C=C, layers=layers, stem=stem), auxiliary)


def uniform(op: str) -> G.CellGenotype:
    """Both cells built from one op on inputs (0, 1) of every node."""
    edges = tuple((op, j) for _ in range(4) for j in (0, 1))
    return G.CellGenotype(edges, (2, 3, 4, 5), edges, (2, 3, 4, 5))


@pytest.mark.parametrize(
    "dataset, stem, layers",
    [(CIFAR, "cifar", 5), (FASHION, "cifar", 5), (IMAGENET16, "cifar", 5), (IMAGENET, "imagenet", 4)],
    ids=["cifar", "fashion_1ch", "imagenet16", "imagenet"],
)
def test_shapes_and_aux_head_only_in_training(dataset: SimpleNamespace, stem: str, layers: int) -> None:
    torch.manual_seed(0)
    model = net(dataset, stem=stem, layers=layers)
    x = torch.randn(2, dataset.channels, dataset.size, dataset.size)
    model.train()
    logits, aux = model(x)
    assert logits.shape == aux.shape == (2, dataset.num_classes)
    model.eval()
    logits, aux = model(x)
    assert logits.shape == (2, dataset.num_classes) and aux is None


def test_without_aux_head_there_are_no_aux_logits_and_the_count_is_the_same() -> None:
    with_head, without = net(CIFAR, auxiliary=True), net(CIFAR, auxiliary=False)
    assert without.train()(torch.randn(2, 3, 32, 32))[1] is None
    assert count_params(with_head) == count_params(without)
    assert sum(p.numel() for p in with_head.parameters()) > sum(p.numel() for p in without.parameters())


def test_aux_heads_follow_the_reference() -> None:
    """CIFAR head: BN after the 768-channel conv and AvgPool(5, 3); ImageNet head: no BN there (model.py:97-101)."""
    cifar = net(CIFAR, C=4, layers=8).auxiliary_head.features
    imagenet = net(IMAGENET, stem="imagenet", layers=5).auxiliary_head.features
    assert isinstance(cifar[1], nn.AvgPool2d) and (cifar[1].kernel_size, cifar[1].stride) == (5, 3)
    assert isinstance(imagenet[1], nn.AvgPool2d) and (imagenet[1].kernel_size, imagenet[1].stride) == (5, 2)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in cifar) == 2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in imagenet) == 1
    fashion = net(FASHION, C=4, layers=5).auxiliary_head.features  # 7x7 maps: the 5x5/3 pool gives 1x1
    assert isinstance(fashion[1], nn.AdaptiveAvgPool2d)


def test_drop_path_zeroes_whole_samples_and_rescales_the_rest() -> None:
    torch.manual_seed(0)
    x = torch.ones(4000, 2, 3, 3)
    out = drop_path(x, 0.25)
    per_sample = out.flatten(1)
    kept = per_sample[:, 0] != 0
    assert torch.allclose(per_sample[kept], torch.tensor(1 / 0.75))
    assert torch.all(per_sample[~kept] == 0)
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.03)


def test_drop_path_skips_identity_ops_and_is_off_in_eval_mode() -> None:
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    skips, convs = net(CIFAR, uniform("skip_connect")), net(CIFAR, uniform("sep_conv_3x3"))

    def outputs(model: nn.Module, p: float, train: bool) -> torch.Tensor:
        model.train(train)
        model.set_drop_path(p)
        torch.manual_seed(1)
        return model(x)[0]

    # reduction cells' skip ops are FactorizedReduce (not Identity), so compare normal cells only
    cell = skips.cells[0]
    states = (skips.stem(x), skips.stem(x))
    cell.train()
    assert torch.equal(cell(*states, torch.tensor(0.9)), cell(*states, None))
    assert not torch.equal(outputs(convs, 0.9, True), outputs(convs, 0.0, True))
    assert torch.equal(outputs(convs, 0.9, False), outputs(convs, 0.0, False))


def test_s4_noise_op_builds() -> None:
    g = G.CellGenotype(uniform("sep_conv_3x3").normal[:-1] + (("noise", 3),), (2, 3, 4, 5),
                       uniform("sep_conv_3x3").reduce, (2, 3, 4, 5), space="s4")
    assert net(CIFAR, g).eval()(torch.randn(1, 3, 32, 32))[0].shape == (1, 10)


@pytest.mark.parametrize(
    "genotype, message",
    [
        (G.ArchString("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|"), "nasctl evaluate space=nb201"),
        (G.CellGenotype((("conv_9x9", 0), ("skip_connect", 1)), (2,), (("skip_connect", 0), ("skip_connect", 1)), (2,)),
         "unknown op 'conv_9x9'"),
        (G.CellGenotype((("skip_connect", 0), ("skip_connect", 2)), (2,), (("skip_connect", 0), ("skip_connect", 1)), (2,)),
         "cannot take input 2"),
        (G.CellGenotype((("skip_connect", 0),), (2,), (("skip_connect", 0), ("skip_connect", 1)), (2,)),
         "two per intermediate node"),
        (G.CellGenotype((("skip_connect", 0), ("skip_connect", 1)), (2, 3), (("skip_connect", 0), ("skip_connect", 1)), (2,)),
         "normal_concat"),
    ],
    ids=["nb201", "unknown_op", "bad_input", "odd_edges", "bad_concat"],
)
def test_bad_genotypes_are_user_errors(genotype: G.Genotype, message: str) -> None:
    with pytest.raises(NasctlError, match=message):
        net(CIFAR, genotype)


def test_bad_net_config_is_a_user_error() -> None:
    with pytest.raises(NasctlError, match="net.stem"):
        net(CIFAR, stem="resnet")
