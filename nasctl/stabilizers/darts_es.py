"""DARTS-ES (Zela et al., ICLR 2020): stop the search when the dominant Hessian eigenvalue grows too fast.

Follows `automl/RobustDARTS` src/utils.py:31-140 (`EVLocalAvg`) and src/search/train_search.py:178-194,
373-426 (`--early_stop 1`). The eigenvalue lambda_k is taken every `ev_every` epochs; its local average
LA_k = mean(lambda_{max(0, k-h)} .. lambda_{k+h}), h = window // 2, is known once lambda_{k+h} is. When
the newest LA_k lies at least `delta` averages and `start_epoch` epochs in, the search stops if
LA_k / LA_{k-delta} > factor, and keeps the genotype of the epoch of LA_{k-delta}.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING

from nasctl import genotype as G
from nasctl.errors import NasctlError
from nasctl.stabilizers.base import STABILIZERS, EarlyStop, Stabilizer, StabilizerDef


@dataclass
class DartsESConfig:
    ev_every: int = MISSING  # epochs between eigenvalues (RD's --report_freq_hessian)
    window: int = MISSING  # eigenvalues per local average (odd: the average is centred)
    factor: float = MISSING  # stop when LA_k / LA_{k-delta} exceeds this
    delta: int = MISSING  # how many local averages back the ratio looks
    start_epoch: int = MISSING  # no stop before the kept epoch reaches this (RD's --es_start_epoch)

    def __post_init__(self) -> None:
        if self.ev_every < 1 or self.window < 1 or self.window % 2 == 0 or self.delta < 1 or self.factor <= 0:
            raise NasctlError(
                "darts_es needs ev_every >= 1, an odd window >= 1 (its local average is centred), delta >= 1 and "
                f"factor > 0, got ev_every={self.ev_every}, window={self.window}, delta={self.delta}, "
                f"factor={self.factor}."
            )


class EigenvalueTracker:
    """RobustDARTS's local-average rule over the eigenvalues seen so far; pure bookkeeping, no tensors."""

    def __init__(self, cfg: DartsESConfig) -> None:
        self.cfg = cfg
        self.epochs: list[int] = []  # the epoch of each eigenvalue
        self.evs: list[float] = []
        self.genotypes: list[dict] = []  # the genotype derived at each of those epochs

    def local_averages(self) -> list[float]:
        """LA_0 .. LA_{n-1-h}: every local average whose last eigenvalue is known."""
        h, n = self.cfg.window // 2, len(self.evs)
        return [sum(self.evs[max(0, k - h):k + h + 1]) / len(self.evs[max(0, k - h):k + h + 1]) for k in range(n - h)]

    def update(self, epoch: int, ev: float, genotype: G.Genotype) -> EarlyStop | None:
        """Record this epoch's eigenvalue and genotype; an EarlyStop if the rule fires."""
        self.epochs.append(epoch)
        self.evs.append(float(ev))
        self.genotypes.append(genotype.to_dict())
        la = self.local_averages()
        k, d = len(la) - 1, self.cfg.delta
        if k - d < 0 or self.epochs[k - d] < self.cfg.start_epoch:
            return None
        ratio = la[k] / la[k - d]
        if not ratio > self.cfg.factor:
            return None
        kept = self.epochs[k - d]
        return EarlyStop(
            epoch=kept, genotype=G.from_dict(self.genotypes[k - d]),
            reason=(
                f"DARTS-ES: the local average of the dominant Hessian eigenvalue grew {ratio:.3f}x (> factor "
                f"{self.cfg.factor}) from epoch {kept} to epoch {self.epochs[k]} (window {self.cfg.window}, "
                f"delta {d}); stopped after epoch {epoch}, keeping the genotype of epoch {kept}."
            ),
            details={"rule": "darts_es", "triggered_epoch": epoch, "genotype_epoch": kept, "ratio": ratio},
        )

    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "evs": self.evs, "genotypes": self.genotypes}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs, self.evs, self.genotypes = state["epochs"], state["evs"], state["genotypes"]


class DartsES(Stabilizer):
    """Needs the eigenvalue every `ev_every` epochs; ends the search when the tracker's rule fires."""

    requires = ("arch_hessian",)

    def __init__(self, cfg: DartsESConfig) -> None:
        super().__init__(cfg)
        self.tracker = EigenvalueTracker(cfg)

    def needs_hessian(self, epoch: int, epochs: int) -> bool:
        return epoch % self.cfg.ev_every == 0 and epoch < epochs - 1  # RD never stops after the last epoch

    def on_epoch_end(self, epoch: int, epochs: int, record: dict[str, Any], genotype: G.Genotype) -> EarlyStop | None:
        if not self.needs_hessian(epoch, epochs):
            return None
        return self.tracker.update(epoch, record["hessian_eig"], genotype)

    def state_dict(self) -> dict[str, Any]:
        return self.tracker.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.tracker.load_state_dict(state)


STABILIZERS.register("darts_es")(StabilizerDef(DartsESConfig, DartsES))
