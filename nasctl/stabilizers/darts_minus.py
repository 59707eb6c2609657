"""DARTS- (Chu et al., ICLR 2021): every mixed edge gets an auxiliary skip outside the softmax,
o(x) = sum_o softmax(alpha)_o o(x) + beta_e aux(x), with beta_e decaying towards 0 over the search.

Follows `Meituan-AutoML/DARTS-`: src/search/model_search.py:17-45 (aux = Identity, or a 1x1 conv
initialised to the identity, on stride-1 edges; a trainable FactorizedReduce(affine=False) on
stride-2 edges; on all edges of both cell types) and src/utils.py `DecayScheduler` (beta per
epoch). beta is not learned and derive ignores it (it reads alpha only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import torch
from omegaconf import MISSING
from torch import nn

from nasctl.errors import NasctlError
from nasctl.spaces.base import Supernet
from nasctl.spaces.ops import FactorizedReduce
from nasctl.stabilizers.base import STABILIZERS, Stabilizer, StabilizerDef


class Decay(Enum):
    linear = "linear"  # beta0 (max - e) / (max - start): 1.00, 0.98, ..., 0.02 over 50 of 50 epochs
    cosine = "cosine"  # beta0 (1 + cos(pi e / (max - start))) / 2
    slow_cosine = "slow_cosine"  # beta0 cos(pi/2 e / (max - start))
    none = "none"  # constant beta0 (the argparse default of the reference)


class AuxOp(Enum):
    skip = "skip"  # Identity
    conv1 = "conv1"  # 1x1 conv initialised to the identity (trainable)


@dataclass
class DartsMinusConfig:
    beta0: float = MISSING  # beta at the start
    decay: Decay = MISSING
    decay_start_epoch: int = MISSING  # beta = beta0 before this epoch
    decay_stop_epoch: Optional[int] = MISSING  # beta stays at its value of this epoch afterwards; null = search.epochs
    decay_max_epoch: Optional[int] = MISSING  # the epoch the curves reach 0 at; null = search.epochs
    aux_op: AuxOp = MISSING  # the stride-1 auxiliary op; stride-2 edges always use FactorizedReduce

    def __post_init__(self) -> None:
        self.check(self.decay_max_epoch, self.decay_stop_epoch)

    def check(self, max_epoch: int | None, stop_epoch: int | None) -> None:
        """0 <= start < max and stop >= start, for the given (or, when null, not yet known) max and stop."""
        start = self.decay_start_epoch
        if start < 0 or (max_epoch is not None and start >= max_epoch) or (stop_epoch is not None and stop_epoch < start):
            raise NasctlError(
                "darts_minus needs 0 <= decay_start_epoch < decay_max_epoch and decay_stop_epoch >= decay_start_epoch "
                f"(null = search.epochs), got {start}, {max_epoch} and {stop_epoch}."
            )


def beta_at(cfg: DartsMinusConfig, epoch: int, epochs: int) -> float:
    """The reference's DecayScheduler.step(epoch) in a run of `epochs` epochs, computed without state
    (so a resumed run agrees); a null stop or max epoch is `epochs`."""
    t_max, t_stop = (epochs if t is None else t for t in (cfg.decay_max_epoch, cfg.decay_stop_epoch))
    cfg.check(t_max, t_stop)
    if cfg.decay is Decay.none or epoch < cfg.decay_start_epoch:
        return cfg.beta0
    e, span = min(epoch, t_stop), t_max - cfg.decay_start_epoch
    if cfg.decay is Decay.linear:
        return cfg.beta0 * (t_max - e) / span
    if cfg.decay is Decay.cosine:
        return cfg.beta0 * (1 + math.cos(math.pi * e / span)) / 2
    return cfg.beta0 * math.cos(math.pi / 2 * e / span)


class AuxBranch(nn.Module):
    """beta * op(x); beta is a buffer, so the schedule updates it in place on any device."""

    def __init__(self, op: nn.Module) -> None:
        super().__init__()
        self.op = op
        self.register_buffer("beta", torch.ones(()), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta * self.op(x)


def aux_op(kind: AuxOp, C: int, stride: int) -> nn.Module:
    if stride == 2:
        return FactorizedReduce(C, C, affine=False)
    if kind is AuxOp.skip:
        return nn.Identity()
    conv = nn.Conv2d(C, C, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(C).view(C, C, 1, 1))
    return conv


class DartsMinus(Stabilizer):
    """Adds the scaled auxiliary branch to every mixed op and steps beta once per epoch."""

    def configure(self, model: Supernet) -> None:
        for m in model.mixed_ops():
            m.aux = AuxBranch(aux_op(self.cfg.aux_op, m.C, m.stride))

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        beta = beta_at(self.cfg, epoch, epochs)
        for m in model.mixed_ops():
            m.aux.beta.fill_(beta)
        return {"darts_minus_beta": beta}


STABILIZERS.register("darts_minus")(StabilizerDef(DartsMinusConfig, DartsMinus))
