"""nasctl's own CPU kernels (`depthwise.cpp`) for stride-1 'same' 3x3 and 5x5 depthwise convs on NHWC memory.

The forward, the input gradient (the forward with the flipped kernel) and the weight gradient, which
oneDNN runs on its generic path at 5x5 (5-7x slower than this loop); a tiny conv costs oneDNN tens of
microseconds of set-up (docs/performance.md). The extension is compiled on first use with torch's C++
toolchain (a C++ compiler and ninja) into torch's extension cache, one build per source, torch install
and CPU capability; where it cannot be built, or NASCTL_CPU_KERNELS=0 is set, every conv runs through
torch's (one warning line)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("depthwise.cpp")
KERNELS = (3, 5)  # the kernel sizes that go through nasctl's kernels (both measured faster in a search step)
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512vl", "-mfma"], "AVX2": ["-mavx2", "-mfma"]}


@functools.cache
def extension() -> Any | None:
    """The compiled kernel module, or None where it is switched off or cannot be built."""
    if os.environ.get("NASCTL_CPU_KERNELS", "1") == "0":
        return None
    isa = torch.backends.cpu.get_cpu_capability()
    try:
        import ninja  # the pip package's binary, also where its bin/ is not on PATH (an unactivated venv)

        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime is found": no CUDA code here
        from torch.utils.cpp_extension import _get_build_directory, load

        # one build per source, torch install and CPU capability: torch rebuilds a name whose source or include
        # paths changed, so two checkouts or venvs sharing one name would rebuild each other's, 30 s each time
        key = hashlib.sha1(SOURCE.read_bytes() + f"{torch.__file__}{torch.__version__}{isa}".encode()).hexdigest()[:12]
        name, path = f"nasctl_depthwise_{isa.lower()}_{key}", os.environ.get("PATH", "")
        if not any(Path(_get_build_directory(name, verbose=False)).glob("*.so")):
            log.info("compiling nasctl's CPU depthwise kernels (once, about 30 s)")
        os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, path])
        try:
            return load(name, [str(SOURCE)], extra_cflags=["-O3", "-fopenmp", *ISA_FLAGS.get(isa, [])])
        finally:
            os.environ["PATH"] = path
    except Exception as exc:  # noqa: BLE001  (no compiler or ninja: torch's convs are correct, only slower)
        log.warning("nasctl's CPU depthwise kernels could not be built (%s); torch's convs run instead.",
                    str(exc).splitlines()[0][:200])
        return None


def will_run(edge: tuple[Any, int]) -> bool:
    """Whether the backward pass under way reaches this edge of the graph (False: its gradient is dropped)."""
    node = edge[0]
    if node is None:
        return False
    try:
        return torch._C._will_engine_execute_node(node)
    except RuntimeError:  # a leaf that autograd.grad() returns: wanted
        return True


def same_conv(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The stride-1 'same' depthwise conv through nasctl's kernel (float32 NHWC in, NHWC out)."""
    return extension().depthwise_forward(x, weight, weight.shape[-1] // 2)


class Depthwise(torch.autograd.Function):
    """A stride-1 'same' depthwise conv through nasctl's kernels: the forward, the input gradient (the forward
    conv of the gradient with the flipped kernel) and the weight gradient. Twice differentiable through
    torch's own conv ops."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return same_conv(x, weight)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        k, C = weight.shape[-1], weight.shape[0]
        if torch.is_grad_enabled():  # create_graph: the gradient must itself be differentiable
            gx, gw, _ = torch.ops.aten.convolution_backward(
                g, x, weight, None, [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], C,
                [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
            return gx, gw
        gx = gw = None
        if ctx.needs_input_grad[0] and will_run(ctx.next_functions[0]):
            gx = same_conv(g, weight.flip(2, 3))
        if ctx.needs_input_grad[1] and will_run(ctx.next_functions[1]):
            gw = extension().depthwise_weight_grad(g, x, k, k // 2)
        return gx, gw


def depthwise(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The stride-1, undilated, 'same' depthwise conv of x (groups = channels): through nasctl's kernels for
    float32 NHWC on a CPU (eager, no autocast, 3x3 or 5x5), else through torch's conv."""
    k = weight.shape[-1]
    if not (
        k in KERNELS and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
        and x.is_contiguous(memory_format=torch.channels_last) and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling() and extension() is not None
    ):
        return F.conv2d(x, weight, None, 1, k // 2, 1, weight.shape[0])
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return Depthwise.apply(x, weight)
    return same_conv(x, weight)
