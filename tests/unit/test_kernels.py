"""nasctl's CPU depthwise kernel: the gradients of torch's conv, to second order, and only what is asked for."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nasctl.spaces import kernels
from nasctl.spaces.ops import OPS


def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, w, None, 1, w.shape[-1] // 2, 1, w.shape[0])


def inputs(C: int, k: int, shape: tuple[int, int] = (7, 9)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(3, C, *shape).contiguous(memory_format=torch.channels_last).requires_grad_()
    return x, torch.randn(C, 1, k, k, requires_grad=True)


def test_the_kernel_is_built_here():
    assert kernels.extension() is not None  # CI has a C++ compiler: the fast path must be what it tests


@pytest.mark.parametrize("k", kernels.KERNELS)
@pytest.mark.parametrize("C", [16, 20, 64])  # whole blocks of 16 channels, a remainder, several blocks
def test_gradients_equal_torchs_conv(k, C):
    x, w = inputs(C, k)
    y = kernels.depthwise(x, w)
    assert type(y.grad_fn).__name__ == "DepthwiseBackward"
    ref = conv(x, w)
    torch.testing.assert_close(y, ref)
    g = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(y, [x, w], g), torch.autograd.grad(ref, [x, w], g)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("k", kernels.KERNELS)
def test_without_gradients_the_kernel_equals_torchs_conv(k):
    """Evaluation (no_grad) and a weight without gradient take the kernel's forward alone."""
    x, w = inputs(20, k, (6, 5))
    with torch.no_grad():
        y = kernels.depthwise(x, w)
    assert y.grad_fn is None and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, conv(x, w))


@pytest.mark.parametrize("k", kernels.KERNELS)
def test_double_backward_equals_torchs_conv(k):
    """Amended-DARTS and the Hessian diagnostic differentiate the gradient again."""
    x, w = inputs(8, k)
    v = torch.randn(3, 8, 7, 9)
    out = []
    for f in (kernels.depthwise, conv):
        y = f(x, w)
        gx, gw = torch.autograd.grad((y * y).sum(), [x, w], create_graph=True)
        out.append(torch.autograd.grad((gx * v).sum() + gw.sum(), [x, w]))
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


class Counting:
    """The extension, counting its weight-gradient calls."""

    def __init__(self, ext) -> None:
        self.ext, self.calls = ext, 0

    def depthwise_weight_grad(self, *args):
        self.calls += 1
        return self.ext.depthwise_weight_grad(*args)

    def depthwise_forward(self, *args):
        return self.ext.depthwise_forward(*args)


def test_a_gradient_nobody_asked_for_is_not_computed(monkeypatch):
    """The architecture step takes grad w.r.t. the alphas only: no weight gradient (as oneDNN's output mask)."""
    counting = Counting(kernels.extension())
    monkeypatch.setattr(kernels, "extension", lambda: counting)
    x, w = inputs(16, 5)
    alpha = torch.tensor(0.5, requires_grad=True)
    loss = (alpha * kernels.depthwise(x, w)).sum()
    torch.autograd.grad(loss, [alpha], retain_graph=True)
    assert counting.calls == 0
    torch.autograd.grad(loss, [alpha, w], retain_graph=True)
    loss.backward(inputs=[w])
    assert counting.calls == 2


def test_switched_off_every_conv_is_torchs(monkeypatch):
    monkeypatch.setenv("NASCTL_CPU_KERNELS", "0")
    monkeypatch.setattr(kernels, "extension", kernels.extension.__wrapped__)  # uncached: reads the variable now
    x, w = inputs(16, 5)
    assert type(kernels.depthwise(x, w).grad_fn).__name__ == "ConvolutionBackward0"


@pytest.mark.parametrize("name", ["sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"])
def test_candidates_take_the_kernel_path_in_nhwc_and_torchs_in_nchw(name, monkeypatch):
    counting = Counting(kernels.extension())
    monkeypatch.setattr(kernels, "extension", lambda: counting)
    op = OPS[name](16, 1, False)
    for layout, calls in ((torch.contiguous_format, 0), (torch.channels_last, 2 if name.startswith("sep") else 1)):
        counting.calls = 0
        op.to(memory_format=layout)
        op(torch.randn(2, 16, 8, 8).to(memory_format=layout)).sum().backward()
        assert counting.calls == calls
