"""DARTS evaluation networks: a `CellGenotype` stacked into the CIFAR or the ImageNet network.

Follows `quark0/darts` cnn/model.py (NetworkCIFAR, NetworkImageNet, the two auxiliary heads) and
cnn/utils.py (count_parameters_in_MB). Ops and drop_path come from `spaces/ops.py`, with affine BN.
Two generalisations, both identical to the reference at its input sizes: the final pooling is
global (the reference's AvgPool2d(7) at 224 px), and an auxiliary head whose reference pooling
does not give the 2x2 map its 2x2 conv needs (e.g. 7x7 Fashion-MNIST maps) pools adaptively to 2x2.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nasctl.errors import NasctlError
from nasctl.genotype import CellGenotype, Genotype
from nasctl.spaces.ops import OPS, FactorizedReduce, ReLUConvBN, drop_path

STEMS = ("cifar", "imagenet")


class EvalCell(nn.Module):
    """One discrete cell: each node sums two ops on earlier states; output = concat of `concat` states."""

    def __init__(
        self, edges: tuple[tuple[str, int], ...], concat: tuple[int, ...],
        C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool,
    ) -> None:
        super().__init__()
        self.pre0 = FactorizedReduce(C_pp, C) if reduction_prev else ReLUConvBN(C_pp, C, 1, 1, 0, True)
        self.pre1 = ReLUConvBN(C_p, C, 1, 1, 0, True)
        self.ops = nn.ModuleList(OPS[op](C, 2 if reduction and j < 2 else 1, True) for op, j in edges)
        self.inputs = [j for _, j in edges]
        self.concat = list(concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: torch.Tensor | None) -> torch.Tensor:
        """`drop_prob` (None = off) drops the output of every op but Identity (skip) per sample."""
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(0, len(self.ops), 2):
            node = 0
            for op, j in zip(self.ops[i : i + 2], self.inputs[i : i + 2]):
                h = op(states[j])
                if drop_prob is not None and not isinstance(op, nn.Identity):
                    h = drop_path(h, drop_prob)
                node = node + h
            states.append(node)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Auxiliary classifier at 2/3 depth: pool to 2x2, 1x1 conv to 128, 2x2 conv to 768, linear."""

    def __init__(self, C: int, num_classes: int, size: int, kernel: int, stride: int, bn_768: bool) -> None:
        super().__init__()
        fits = size >= kernel and (size - kernel) // stride + 1 == 2
        pool = nn.AvgPool2d(kernel, stride=stride, count_include_pad=False) if fits else nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(),
            pool,
            nn.Conv2d(C, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(),
            nn.Conv2d(128, 768, 2, bias=False),
            *([nn.BatchNorm2d(768)] if bn_768 else []),  # the ImageNet head has none (model.py:97-101)
            nn.ReLU(),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def _halve(size: int) -> int:
    return (size + 1) // 2


class EvalNetwork(nn.Module):
    """Stem, `layers` cells (reductions at 1/3 and 2/3 depth), global pool, linear; aux head in training.

    `forward` returns (logits, aux_logits); aux_logits is None in eval mode or without a head.
    The training loop sets the drop-path probability each epoch with `set_drop_path`.
    """

    def __init__(
        self, genotype: CellGenotype, C: int, layers: int, stem: str,
        num_classes: int, in_channels: int, size: int, auxiliary: bool,
    ) -> None:
        super().__init__()
        self.register_buffer("drop_prob", torch.zeros(()), persistent=False)
        self.drop_path_on = False
        self.aux_index = 2 * layers // 3
        self.auxiliary_head: AuxiliaryHead | None = None
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, 3 * C, 3, padding=1, bias=False), nn.BatchNorm2d(3 * C))
            self.stem1 = nn.Identity()
            C_pp = C_p = 3 * C
            reduction_prev = False
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, C // 2, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C // 2),
                nn.ReLU(),
                nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(C),
            )
            self.stem1 = nn.Sequential(nn.ReLU(), nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(C))
            C_pp = C_p = C
            reduction_prev = True
            size = _halve(_halve(_halve(size)))
        self.cells = nn.ModuleList()
        C_curr = C
        for i in range(layers):
            reduction = i in (layers // 3, 2 * layers // 3)
            if reduction:
                C_curr, size = 2 * C_curr, _halve(size)
            edges, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            self.cells.append(EvalCell(edges, concat, C_pp, C_p, C_curr, reduction, reduction_prev))
            reduction_prev = reduction
            C_pp, C_p = C_p, len(concat) * C_curr
            if i == self.aux_index and auxiliary:
                kernel, stride = (5, 3) if stem == "cifar" else (5, 2)
                self.auxiliary_head = AuxiliaryHead(C_p, num_classes, size, kernel, stride, bn_768=stem == "cifar")
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def compile_regions(self) -> nn.ModuleList:
        """What `trainer.compile=regional` compiles: every cell (cells of one stage share a graph)."""
        return self.cells

    def set_drop_path(self, prob: float) -> None:
        """Drop-path probability in training; held in a tensor, so a new value does not recompile the model."""
        self.drop_prob.fill_(prob)
        self.drop_path_on = prob > 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        s0 = self.stem(x)
        s1 = self.stem1(s0)
        drop = self.drop_prob if self.training and self.drop_path_on else None
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, drop)
            if i == self.aux_index and self.training and self.auxiliary_head is not None:
                aux = self.auxiliary_head(s1)
        return self.classifier(self.pool(s1).flatten(1)), aux


def check_genotype(g: Genotype) -> CellGenotype:
    """`g` if it is a well-formed DARTS-cell genotype with known ops; otherwise a NasctlError."""
    if not isinstance(g, CellGenotype):
        raise NasctlError(
            f"retrain supports DARTS-cell genotypes; {g.space} architecture {g} is scored by the benchmark: "
            f"nasctl evaluate space=nb201 genotype='{g}'"
        )
    for cell in ("normal", "reduce"):
        edges, concat = getattr(g, cell), getattr(g, f"{cell}_concat")
        if not edges or len(edges) % 2:
            raise NasctlError(f"Genotype {cell} cell has {len(edges)} edges; expected two per intermediate node.")
        for k, (op, j) in enumerate(edges):
            if op not in OPS:
                raise NasctlError(f"Genotype {cell} cell: unknown op {op!r}. Known ops: {', '.join(sorted(OPS))}.")
            if not 0 <= j < 2 + k // 2:
                raise NasctlError(f"Genotype {cell} cell: node {2 + k // 2} cannot take input {j} (only 0..{1 + k // 2}).")
        if not concat or not all(0 <= i < 2 + len(edges) // 2 for i in concat):
            raise NasctlError(f"Genotype {cell}_concat {list(concat)} names states outside 0..{1 + len(edges) // 2}.")
    return g


def build_eval_network(genotype: Genotype, dataset: Any, net: Any, auxiliary: bool) -> EvalNetwork:
    """The evaluation network of `genotype` for a dataset config (classes, channels, size) and a net config."""
    if net.stem not in STEMS:
        raise NasctlError(f"net.stem={net.stem!r} is not one of {', '.join(STEMS)}.")
    if net.C < 2 or net.layers < 1:
        raise NasctlError(f"net.C must be at least 2 and net.layers at least 1, got C={net.C}, layers={net.layers}.")
    return EvalNetwork(
        check_genotype(genotype), net.C, net.layers, net.stem,
        dataset.num_classes, dataset.channels, dataset.size, auxiliary,
    )


def count_params(model: nn.Module) -> float:
    """Parameters in millions as the papers count them: all except the auxiliary head."""
    return sum(p.numel() for name, p in model.named_parameters() if not name.startswith("auxiliary_head.")) / 1e6
