"""The fused mixed-edge path (nasctl/spaces/ops.py): the same sums and gradients as sum_o w_o o(x), fewer kernels."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nasctl.relaxations.base import CellMix, EdgeMix
from nasctl.spaces import ops
from nasctl.spaces.base import DenseGrad, MixedOp
from nasctl.spaces.darts import SearchCell
from nasctl.spaces.ops import NB201_OPS, OPS, DilatedDepthwise, Pointwise, scaled_bn

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def reference(m: MixedOp, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """DARTS's MixedOp: every candidate's plain forward times its weight (quark0/darts model_search.py)."""
    return sum(w[i] * m.ops[i](x) for i in m.active)


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("table", [OPS, NB201_OPS], ids=["darts_ops", "nb201_ops"])
def test_fused_edge_equals_the_weighted_sum_of_plain_candidates(table, stride, layout):
    torch.manual_seed(0)
    names = [n for n in table if n != "noise"]
    fused = MixedOp(names, 8, stride, table).to(memory_format=layout)
    plain = copy.deepcopy(fused)
    x = torch.randn(4, 8, 12, 12).to(memory_format=layout).requires_grad_()
    alpha = torch.randn(len(names), requires_grad=True)
    g_out = torch.randn(4, 8, 12 // stride, 12 // stride)
    outs, grads = [], []
    for m, run in ((fused, lambda w: m(x, EdgeMix(w))), (plain, lambda w: reference(plain, x, w))):
        y = run(torch.softmax(alpha, 0))
        outs.append(y)
        grads.append(torch.autograd.grad(y, [x, alpha, *m.parameters()], g_out))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):  # NHWC included: CPU batch norm misreads a stride-0 weight in its backward
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for a, b in zip(fused.buffers(), plain.buffers()):  # running stats and batch counts move alike
        torch.testing.assert_close(a, b)


def test_scaled_bn_is_the_product_in_eval_mode_and_with_an_affine_bn():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3, affine=True)
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
    bn.eval()
    x, w = torch.randn(2, 3, 5, 5), torch.tensor(0.37)
    torch.testing.assert_close(scaled_bn(bn, x, w), w * bn(x))
    assert scaled_bn(bn, x, None).equal(bn(x))


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [12, 11], ids=["even", "odd"])
def test_polyphase_dilated_depthwise_conv_equals_the_dilated_conv(size, stride, k, layout):
    torch.manual_seed(0)
    conv = DilatedDepthwise(6, 6, k, stride, k - 1, dilation=2, groups=6, bias=False).to(memory_format=layout)
    x = torch.randn(3, 6, size, size).to(memory_format=layout).requires_grad_()
    y = conv(x)
    ref = F.conv2d(x, conv.weight, None, stride, k - 1, 2, 6)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, [x, conv.weight], g), torch.autograd.grad(ref, [x, conv.weight], g)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    if layout == torch.channels_last and stride == 1 and size % 2 == 0:
        assert y.is_contiguous(memory_format=torch.channels_last)  # the next 1x1 conv stays on the NHWC path


@pytest.mark.parametrize("layout", LAYOUTS, ids=["nchw", "nhwc"])
def test_pointwise_conv_as_a_matrix_product_equals_the_1x1_conv_to_second_order(layout):
    torch.manual_seed(0)
    conv = Pointwise(6, 10).to(memory_format=layout)
    x = torch.randn(3, 6, 7, 5).to(memory_format=layout).requires_grad_()
    y, ref = conv(x), F.conv2d(x, conv.weight)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    assert y.is_contiguous(memory_format=layout)
    g = torch.randn_like(ref)
    grads = [torch.autograd.grad((out * out).sum(), [x, conv.weight], create_graph=True) for out in (y, ref)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    hvp = [torch.autograd.grad(gx, conv.weight, g[:, :6]) for gx, _ in grads]  # double backward (Amended-DARTS)
    torch.testing.assert_close(hvp[0], hvp[1], rtol=1e-4, atol=1e-4)


class KernelCount(TorchDispatchMode):
    """Counts the aten kernels a block runs, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func.__name__.split(".")[0]] += 1
        return func(*args, **(kwargs or {}))


def test_each_node_is_pooled_rectified_and_split_into_polyphase_components_once_for_all_its_edges(monkeypatch):
    cell = SearchCell([list(OPS)[:8]] * 14, 4, 4, 8, 8, 8, reduction=False, reduction_prev=False)
    weights = CellMix(torch.full((14, 8), 1 / 8))
    splits = []
    monkeypatch.setattr(ops, "polyphase", lambda x, d, split=ops.polyphase: splits.append(x) or split(x, d))
    with KernelCount() as k:
        cell(torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6), weights, 0.0)
    # 14 edges read 5 sources (the 2 inputs and 3 of the 4 nodes; no edge reads the last): one max and one
    # avg pool each, and one ReLU each, plus the 2 preprocessing ReLUs and each edge's 2 sep convs' inner ones
    assert k.calls["max_pool2d_with_indices"] == 5 and k.calls["avg_pool2d"] == 5
    assert k.calls["relu"] == 5 + 2 + 14 * 2  # the plain forward: 14 * 6 + 2
    assert len(splits) == 5  # one split of each source's ReLU for its edges' 28 dilated convs


def test_dense_grad_hands_on_a_sliced_gradient_dense_in_the_forwards_layout():
    x = torch.randn(2, 4, 3, 3).to(memory_format=torch.channels_last).requires_grad_()
    y = DenseGrad.apply(x)
    big = torch.randn(2, 12, 3, 3).to(memory_format=torch.channels_last)
    (g,) = torch.autograd.grad(y, x, big[:, 4:8])
    assert g.is_contiguous(memory_format=torch.channels_last) and g.equal(big[:, 4:8])
