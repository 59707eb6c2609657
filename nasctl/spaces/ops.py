"""Candidate operations shared by the cell spaces, keyed by the names the papers' code uses.

Each factory takes (C, stride, affine) and returns a module mapping (B, C, H, W) to
(B, C, H/stride, W/stride). Follows the DARTS code's primitives (Liu et al. 2019).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

OpFactory = Callable[[int, int, bool], nn.Module]
OPS: dict[str, OpFactory] = {}


def op(name: str) -> Callable[[OpFactory], OpFactory]:
    def add(factory: OpFactory) -> OpFactory:
        OPS[name] = factory
        return factory

    return add


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv -> BN."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, k, stride=stride, padding=pad, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, dilation: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_in, k, stride, pad, dilation=dilation, groups=C_in, bias=False),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convs; only the first is strided."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, affine: bool) -> None:
        super().__init__(
            DilConv(C_in, C_in, k, stride, pad, 1, affine),
            DilConv(C_in, C_out, k, 1, pad, 1, affine),
        )


class Zero(nn.Module):
    """The `none` op: zeros of the (strided) input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset strided 1x1 convs, concatenated (skip on stride 2)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # padding keeps odd sizes aligned
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


class Noise(nn.Module):
    """RobustDARTS S4 `noise` op: fresh N(0, 1) samples of the (strided) input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn_like(x[:, :, :: self.stride, :: self.stride])


def drop_path(x: torch.Tensor, drop_prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability `drop_prob`, scale the kept ones by 1/keep (DARTS cnn/utils.py)."""
    keep = 1.0 - drop_prob
    mask = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device) < keep
    return x / keep * mask


def pool(kind: str, C: int, stride: int, affine: bool) -> nn.Module:
    """3x3 pooling; in search cells (affine=False) followed by a non-affine BN as in DARTS."""
    layer = (
        nn.MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    return layer if affine else nn.Sequential(layer, nn.BatchNorm2d(C, affine=False))


op("none")(lambda C, stride, affine: Zero(stride))
op("noise")(lambda C, stride, affine: Noise(stride))
op("max_pool_3x3")(lambda C, stride, affine: pool("max", C, stride, affine))
op("avg_pool_3x3")(lambda C, stride, affine: pool("avg", C, stride, affine))
op("skip_connect")(lambda C, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(C, C, affine))
op("sep_conv_3x3")(lambda C, stride, affine: SepConv(C, C, 3, stride, 1, affine))
op("sep_conv_5x5")(lambda C, stride, affine: SepConv(C, C, 5, stride, 2, affine))
op("dil_conv_3x3")(lambda C, stride, affine: DilConv(C, C, 3, stride, 2, 2, affine))
op("dil_conv_5x5")(lambda C, stride, affine: DilConv(C, C, 5, stride, 4, 2, affine))
op("nor_conv_1x1")(lambda C, stride, affine: ReLUConvBN(C, C, 1, stride, 0, affine))
op("nor_conv_3x3")(lambda C, stride, affine: ReLUConvBN(C, C, 3, stride, 1, affine))

# NAS-Bench-201's search cells (Dong & Yang 2020, AutoDL cell_operations.py) use the same ops except
# that average pooling has no BN after it; the names stay the benchmark's arch-string names.
NB201_OPS: dict[str, OpFactory] = {
    **{n: OPS[n] for n in ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3")},
    "avg_pool_3x3": lambda C, stride, affine: nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False),
}
