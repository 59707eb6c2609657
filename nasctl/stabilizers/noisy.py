"""NoisyDARTS (Chu & Zhang, BMVC 2021): noise on the output of every `skip_connect` candidate during search.

Follows `xiaomi-automl/NoisyDARTS` model_search.py:14-102: additive Gaussian z ~ N(mu, (lambda *
std(out))^2) with std over the whole skip output (a scalar), no gradient through the noise, in
train mode only (so in both the alpha and the w step, never at evaluation); a uniform variant
mu + U(-a, a), a = sqrt(3 lambda), not scaled by std; a multiplicative mixture out * z; an
optional cosine decay d_e = (1 + cos(pi e / T)) / 2 (0 after T; ND fixes T = 50, its run length;
null = the run's epochs) scaling the noise; and the search network's drop-path (p = 0.3) on the
skip branch after the noise. Deviation: the reference applies that drop-path in eval mode too (in
place, on the edge's input); here it is train-mode only.
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
from nasctl.spaces.ops import drop_path
from nasctl.stabilizers.base import STABILIZERS, Stabilizer, StabilizerDef


class Distribution(Enum):
    gaussian = "gaussian"
    uniform = "uniform"


class Mixture(Enum):
    additive = "additive"  # out + d z
    multiplicative = "multiplicative"  # out * z * d (the reference's scripts use mean 1 with it)


@dataclass
class NoisyConfig:
    factor: float = MISSING  # lambda: std lambda * std(out) (additive), lambda (multiplicative); uniform: variance
    mean: float = MISSING  # mu
    distribution: Distribution = MISSING
    mixture: Mixture = MISSING
    decay: bool = MISSING  # cosine decay of the noise over decay_epochs
    decay_epochs: Optional[int] = MISSING  # T of the cosine decay (the reference fixes it at 50); null = search.epochs
    drop_path: float = MISSING  # drop-path probability on the skip branch (the reference's search network: 0.3)

    def __post_init__(self) -> None:
        if self.factor < 0 or (self.decay_epochs is not None and self.decay_epochs < 1) or not 0 <= self.drop_path < 1:
            raise NasctlError(
                f"noisy needs factor >= 0, decay_epochs >= 1 (or null) and 0 <= drop_path < 1, "
                f"got {self.factor}, {self.decay_epochs} and {self.drop_path}."
            )


def decay_at(cfg: NoisyConfig, epoch: int, epochs: int) -> float:
    """d_e of ND's CosineDecayScheduler with T = decay_epochs (null: the run's `epochs`)."""
    if not cfg.decay:
        return 1.0
    T = epochs if cfg.decay_epochs is None else cfg.decay_epochs
    return (1 + math.cos(math.pi * epoch / T)) / 2 if epoch <= T else 0.0


class NoisySkip(nn.Module):
    """A skip candidate with NoisyDARTS noise (and drop-path) on its output in train mode."""

    def __init__(self, op: nn.Module, cfg: NoisyConfig) -> None:
        super().__init__()
        self.op, self.cfg = op, cfg
        self.register_buffer("decay", torch.ones(()), persistent=False)

    def noise(self, out: torch.Tensor) -> torch.Tensor:
        c = self.cfg
        if c.distribution is Distribution.uniform:
            return c.mean + (1 - 2 * torch.rand_like(out)) * math.sqrt(3 * c.factor)
        std = c.factor * out.std() if c.mixture is Mixture.additive else c.factor
        return c.mean + std * torch.randn_like(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.op(x)
        if not self.training:
            return out
        with torch.no_grad():
            z = self.noise(out) * self.decay
        out = out + z if self.cfg.mixture is Mixture.additive else out * z
        return drop_path(out, self.cfg.drop_path) if self.cfg.drop_path > 0 else out


class Noisy(Stabilizer):
    """Wraps the skip candidate of every mixed op; steps the noise decay once per epoch."""

    def configure(self, model: Supernet) -> None:
        skips = [m for m in model.mixed_ops() if "skip_connect" in m.names]
        if not skips:
            raise NasctlError("stabilizer=noisy perturbs skip_connect, but this search space has no skip_connect op.")
        for m in skips:
            m.wrap("skip_connect", lambda op: NoisySkip(op, self.cfg))

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        d = decay_at(self.cfg, epoch, epochs)
        for m in model.modules():
            if isinstance(m, NoisySkip):
                m.decay.fill_(d)
        return {"noisy_decay": d}


STABILIZERS.register("noisy")(StabilizerDef(NoisyConfig, Noisy))
