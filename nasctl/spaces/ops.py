"""Candidate operations shared by the cell spaces, keyed by the names the papers' code uses.

Each factory takes (C, stride, affine) and returns a module mapping (B, C, H, W) to
(B, C, H/stride, W/stride). Follows the DARTS code's primitives (Liu et al. 2019).

A mixed edge calls a candidate through `weighted(src, w)` = w * op(src.x) where the candidate is
`Mixable`: its mixing weight enters its last BN as the affine scale (one kernel, not BN then a
product), and it reads the results of its parameter-free first layer (the ReLU, a pooling) from
the `EdgeInput`, which computes each once for every candidate and edge that reads that node. The
same sums as the plain forward, fewer kernels (docs/performance.md).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nasctl.spaces.kernels import depthwise

OpFactory = Callable[[int, int, bool], nn.Module]
OPS: dict[str, OpFactory] = {}


def op(name: str) -> Callable[[OpFactory], OpFactory]:
    def add(factory: OpFactory) -> OpFactory:
        OPS[name] = factory
        return factory

    return add


class EdgeInput:
    """A node's output as the mixed edges read it: `memo(key, fn)` computes fn(x) once for all its readers."""

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x
        self._memo: dict[object, object] = {}

    def memo(self, key: object, fn: Callable[[torch.Tensor], object]) -> object:
        if key not in self._memo:
            self._memo[key] = fn(self.x)
        return self._memo[key]

    def shared(self, layer: nn.Module) -> torch.Tensor:
        """layer(x) of a parameter-free layer, once for all layers of its kind and arguments (its repr)."""
        return self.memo(repr(layer), layer)

    def head(self, channels: int) -> EdgeInput:
        """The first `channels` channels as an input of their own (PC-DARTS's partial channels), shared too."""
        return self.memo(("head", channels), lambda x: EdgeInput(x[:, :channels]))


def scaled_bn(bn: nn.BatchNorm2d, x: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """`w * bn(x)` in one batch-norm kernel (w a scalar tensor; None: `bn(x)`); running stats update as in `bn`."""
    if w is None:
        return bn(x)
    if bn.training:
        bn.num_batches_tracked.add_(1)
    weight = w.expand(bn.num_features).contiguous() if bn.weight is None else bn.weight * w  # CPU NHWC BN misreads a stride-0 weight
    bias = None if bn.bias is None else bn.bias * w
    return F.batch_norm(x, bn.running_mean, bn.running_var, weight, bias, bn.training, bn.momentum, bn.eps)


class Mixable(abc.ABC):
    """A candidate with a fused mixed-edge path (`MixedOp.candidate` runs w * op(x) for any other op)."""

    @abc.abstractmethod
    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        """w * self(src.x) (w None: self(src.x)), reading src's shared results and scaling inside the last BN."""


class Rectified(Mixable, nn.Sequential):
    """ReLU first, BN last: the mixed path reads the edge input's shared ReLU and scales inside the BN."""

    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        y = src.shared(self[0])
        for layer in list(self)[1:-1]:
            y = layer(y)
        return scaled_bn(self[-1], y, w)


def polyphase(x: torch.Tensor, d: int) -> torch.Tensor:
    """The d x d polyphase components of x (B, C, H, W), stacked on the batch: (d*d*B, C, H/d, W/d), in x's memory format."""
    B, C, H, W = x.shape
    h, w = H // d, W // d
    if x.is_contiguous(memory_format=torch.channels_last):  # rearrange the NHWC memory, keep NHWC
        parts = x.permute(0, 2, 3, 1).reshape(B, h, d, w, d, C).permute(2, 4, 0, 1, 3, 5)
        return parts.reshape(d * d * B, h, w, C).permute(0, 3, 1, 2)
    return x.reshape(B, C, h, d, w, d).permute(3, 5, 0, 1, 2, 4).reshape(d * d * B, C, h, w)


def unpolyphase(y: torch.Tensor, d: int) -> torch.Tensor:
    """The inverse of `polyphase`: (d*d*B, C, h, w) components back to (B, C, h*d, w*d)."""
    n, C, h, w = y.shape
    B = n // (d * d)
    if y.is_contiguous(memory_format=torch.channels_last):
        y = y.permute(0, 2, 3, 1).reshape(d, d, B, h, w, C).permute(2, 3, 0, 4, 1, 5)
        return y.reshape(B, h * d, w * d, C).permute(0, 3, 1, 2)
    return y.reshape(d, d, B, C, h, w).permute(2, 3, 4, 0, 5, 1).reshape(B, C, h * d, w * d)


class Depthwise(nn.Conv2d):
    """A depthwise conv (groups = channels); stride 1, undilated and 'same' it goes through `depthwise`
    (nasctl's CPU kernels for the forward and both gradients, at 3x3 and 5x5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel_size[0]
        if self.stride == (1, 1) and self.dilation == (1, 1) and self.padding == (k // 2, k // 2) and k % 2:
            return depthwise(x, self.weight)
        return super().forward(x)


class DilatedDepthwise(Depthwise):
    """A depthwise conv with dilation d and 'same' padding, computed as an undilated conv on each of the
    d x d polyphase components (space-to-batch): the same sums through the CPU's fast small-kernel path."""

    def splits(self, x: torch.Tensor) -> bool:
        """Whether this conv runs on x's polyphase components (stride 1, sizes divisible by the dilation)."""
        (d, _), (s, _) = self.dilation, self.stride
        return s == 1 and x.shape[-2] % d == 0 and x.shape[-1] % d == 0

    def on_parts(self, parts: torch.Tensor) -> torch.Tensor:
        """The undilated 'same' conv of the polyphase components."""
        return depthwise(parts, self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (d, _), (k, _), (s, _) = self.dilation, self.kernel_size, self.stride
        if s == d:  # only the (0, 0) component is read: an undilated conv of every d-th pixel
            return F.conv2d(x[:, :, ::d, ::d], self.weight, None, 1, (k - 1) // 2, 1, self.groups)
        if not self.splits(x):
            return super().forward(x)
        return unpolyphase(self.on_parts(polyphase(x, d)), d)


class Pointwise(nn.Conv2d):
    """A 1x1 conv (stride 1, no padding, one group); on NHWC memory computed as a matrix product over the
    channels (`F.linear` on the (B, H, W, C) view): the same sums, faster than the CPU's 1x1 conv kernel."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__(C_in, C_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x)
        return F.linear(x.permute(0, 2, 3, 1), self.weight.flatten(1)).permute(0, 3, 1, 2)


def conv(C_in: int, C_out: int, k: int, stride: int, pad: int) -> nn.Conv2d:
    """A bias-free conv, `Pointwise` where it is a plain 1x1."""
    if k == 1 and stride == 1 and pad == 0:
        return Pointwise(C_in, C_out)
    return nn.Conv2d(C_in, C_out, k, stride=stride, padding=pad, bias=False)


class ReLUConvBN(Rectified):
    """ReLU -> Conv -> BN."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, affine: bool) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            conv(C_in, C_out, k, stride, pad),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class DilConv(Rectified):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, dilation: int, affine: bool) -> None:
        same = dilation > 1 and pad == dilation * (k - 1) // 2 and k % 2 == 1
        super().__init__(
            nn.ReLU(inplace=False),
            (DilatedDepthwise if same else Depthwise)(C_in, C_in, k, stride, pad, dilation=dilation, groups=C_in, bias=False),
            Pointwise(C_in, C_out),
            nn.BatchNorm2d(C_out, affine=affine),
        )

    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        """As `Rectified`'s, and a polyphase conv reads the components of the edge input's ReLU, split once
        for all the dilated convs of its dilation that read this node."""
        dw = self[1]
        if not (isinstance(dw, DilatedDepthwise) and dw.splits(src.x)):
            return super().weighted(src, w)
        d = dw.dilation[0]
        parts = src.memo(("polyphase", repr(self[0]), d), lambda _: polyphase(src.shared(self[0]), d))
        return scaled_bn(self[3], self[2](unpolyphase(dw.on_parts(parts), d)), w)


class SepConv(Mixable, nn.Sequential):
    """Two stacked depthwise-separable convs; only the first is strided."""

    def __init__(self, C_in: int, C_out: int, k: int, stride: int, pad: int, affine: bool) -> None:
        super().__init__(
            DilConv(C_in, C_in, k, stride, pad, 1, affine),
            DilConv(C_in, C_out, k, 1, pad, 1, affine),
        )

    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        return self[1].weighted(EdgeInput(self[0].weighted(src, None)), w)


class Zero(nn.Module):
    """The `none` op: zeros of the (strided) input's shape."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class FactorizedReduce(Mixable, nn.Module):
    """Halve the resolution with two offset strided 1x1 convs, concatenated (skip on stride 2)."""

    def __init__(self, C_in: int, C_out: int, affine: bool = True) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weighted(EdgeInput(x), None)

    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        x = src.shared(self.relu)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))  # padding keeps odd sizes aligned
        return scaled_bn(self.bn, torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1), w)


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


class Pool(Mixable, nn.Sequential):
    """A pooling, optionally followed by a BN; the mixed path pools an edge input once for all its edges."""

    def weighted(self, src: EdgeInput, w: torch.Tensor | None) -> torch.Tensor:
        y = src.shared(self[0])
        if len(self) == 1:
            return y if w is None else w * y
        return scaled_bn(self[1], y, w)


def pool(kind: str, C: int, stride: int, affine: bool) -> Pool:
    """3x3 pooling; in search cells (affine=False) followed by a non-affine BN as in DARTS."""
    layer = (
        nn.MaxPool2d(3, stride=stride, padding=1)
        if kind == "max"
        else nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    )
    return Pool(layer) if affine else Pool(layer, nn.BatchNorm2d(C, affine=False))


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
    "avg_pool_3x3": lambda C, stride, affine: Pool(nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)),
}
