"""β-DARTS (Ye et al., CVPR 2022): the Beta-Decay regularizer lambda_e * L_beta added to the architecture loss.

L_beta = mean over the edges of all alpha tensors of logsumexp(alpha_edge) on the raw logits
(`Sunshine-Ye/Beta-DARTS` optimizers/darts/architect.py:55-59 `mlc_loss`), so its gradient is
softmax(alpha_edge) / rows. lambda_e = lambda_max * e / ramp_epochs (architect.py:80-85 hard-codes
0 + 50 e / 100, i.e. 0.5 e, at its 100 epochs); ramp_epochs = null (the default) is the run's epochs,
so any run covers the code's line in proportion.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from omegaconf import MISSING

from nasctl.errors import NasctlError
from nasctl.spaces.base import Supernet
from nasctl.stabilizers.base import STABILIZERS, Stabilizer, StabilizerDef


@dataclass
class BetaDecayConfig:
    lambda_max: float = MISSING  # lambda reached at epoch ramp_epochs (the line is not capped after it)
    ramp_epochs: Optional[int] = MISSING  # E_ref of lambda_e = lambda_max * e / E_ref; null = search.epochs

    def __post_init__(self) -> None:
        if self.lambda_max < 0 or (self.ramp_epochs is not None and self.ramp_epochs < 1):
            raise NasctlError(
                "beta_decay needs lambda_max >= 0 and ramp_epochs >= 1 (or null), "
                f"got {self.lambda_max} and {self.ramp_epochs}."
            )


def beta_decay_loss(alphas: list[torch.Tensor]) -> torch.Tensor:
    """Mean over all edges (rows) of all alpha tensors of logsumexp of the row's logits."""
    return torch.cat([torch.logsumexp(a, dim=-1).reshape(-1) for a in alphas]).mean()


class BetaDecay(Stabilizer):
    """Adds lambda_e * L_beta(alpha) to the architecture objective."""

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        self.weight = self.cfg.lambda_max * epoch / (self.cfg.ramp_epochs or epochs)
        return {"beta_decay_lambda": self.weight}

    def arch_loss(self, model: Supernet) -> torch.Tensor:
        return self.weight * beta_decay_loss(list(model.alphas.values()))  # the op logits of any relaxation


STABILIZERS.register("beta_decay")(StabilizerDef(BetaDecayConfig, BetaDecay))
