"""Widening a candidate op to more channels by copying randomly chosen filters (DrNAS net2wider.py:7-76).

Not function-preserving and noise-free, as DR: every new output channel of a conv is a copy of a
random existing filter; a depthwise conv's new channels (they see new input channels) likewise, and
the layer after a conv takes that conv's copies as its new input channels and BN statistics; a conv
fed by the op's input draws the new input channels' weights at random too. Returned with each
replaced parameter is the plan that grows its optimizer state (momentum) the same way (DR :79-116).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nasctl.relaxations.base import Grown, Plan, regrow

if TYPE_CHECKING:
    from nasctl.spaces.ops import FactorizedReduce


def extend(old: int, new: int) -> torch.Tensor:
    """An index of `new` entries: the `old` ones, then `new - old` random copies of them."""
    return torch.cat([torch.arange(old), torch.randint(0, old, (new - old,))])


def _replace(module: nn.Module, name: str, plan: Plan, grown: Grown) -> None:
    old = getattr(module, name)
    new = nn.Parameter(regrow(old.detach(), plan), requires_grad=old.requires_grad)
    setattr(module, name, new)
    grown[new] = (old, plan)


def widen_conv(conv: nn.Conv2d, C_in: int, C_out: int, inputs: torch.Tensor | None, grown: Grown) -> torch.Tensor:
    """Widen to C_in inputs (`inputs`' copies, else drawn) and C_out outputs; returns the output index."""
    out = extend(conv.out_channels, C_out)
    if conv.groups == conv.in_channels:  # depthwise: one filter per (new) channel
        plan: Plan = [(0, out)]
        conv.groups = C_out
    else:
        plan = [(1, inputs if inputs is not None else extend(conv.in_channels, C_in)), (0, out)]
    _replace(conv, "weight", plan, grown)
    conv.in_channels, conv.out_channels = C_in, C_out
    return out


def widen_bn(bn: nn.BatchNorm2d, index: torch.Tensor, grown: Grown) -> None:
    for name in ("running_mean", "running_var"):
        setattr(bn, name, getattr(bn, name).index_select(0, index.to(getattr(bn, name).device)))
    if bn.affine:
        _replace(bn, "weight", [(0, index)], grown)
        _replace(bn, "bias", [(0, index)], grown)
    bn.num_features = len(index)


def widen_reduce(fr: FactorizedReduce, C: int, grown: Grown) -> None:
    """Both halves widened independently, the BN following each half's copies."""
    o1 = fr.conv_1.out_channels
    i1 = widen_conv(fr.conv_1, C, C // 2, None, grown)
    i2 = widen_conv(fr.conv_2, C, C - C // 2, None, grown)
    widen_bn(fr.bn, torch.cat([i1, o1 + i2]), grown)


def widen(op: nn.Module, C: int) -> Grown:
    """Widen every conv and BN of candidate `op` to C channels; returns new parameter -> (old, plan)."""
    from nasctl.spaces.ops import FactorizedReduce  # spaces import the relaxations

    grown: Grown = {}
    reduces = [m for m in op.modules() if isinstance(m, FactorizedReduce)]
    done = {id(m) for r in reduces for m in r.modules()}
    for r in reduces:
        widen_reduce(r, C, grown)
    prev: torch.Tensor | None = None  # the output index of the conv that feeds the next layer
    for m in op.modules():
        if id(m) in done:
            continue
        if isinstance(m, nn.Conv2d):
            prev = widen_conv(m, C, C, prev, grown)
        elif isinstance(m, nn.BatchNorm2d):
            prev = prev if prev is not None else extend(m.num_features, C)  # a pool's BN
            widen_bn(m, prev, grown)
    return grown
