"""The stabilizer hook protocol: the search loop calls these and never names a method.

A stabilizer is one small module registering a subclass of `Stabilizer` with its config
dataclass. Every hook defaults to doing nothing, so a method overrides only what it changes.
Per iteration the loop calls `arch_loss` and `arch_grad` in the architecture step, then runs
the weight step inside `weight_step`; `on_epoch_start` runs before each epoch's first step and
`on_epoch_end` after its last, where an `EarlyStop` ends the search (DARTS-ES).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from nasctl.genotype import Genotype
from nasctl.registry import Registry
from nasctl.spaces.base import Supernet

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> mean loss with the current mixing


@dataclass
class Batches:
    """The minibatches of one search iteration."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


@dataclass(frozen=True)
class EarlyStop:
    """End the search after this epoch and keep the genotype derived at `epoch`."""

    epoch: int
    genotype: Genotype
    reason: str  # one sentence for manifest.json and the report
    details: dict[str, Any]  # machine-readable, stored in manifest.json as `early_stop`


class Stabilizer:
    """Optional hooks; each default leaves plain DARTS unchanged."""

    exclusive: tuple[str, ...] = ()  # what the method takes over alone: "mixing" = the weight step's mixing weights
    requires: tuple[str, ...] = ()  # what it needs of the relaxation: "mixing_weights", "arch_hessian"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def configure(self, model: Supernet) -> None:
        """Called once after the supernet is built (e.g. add auxiliary branches)."""

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        """Update schedules; returns scalars to log in metrics.jsonl."""
        return {}

    @contextlib.contextmanager
    def weight_step(self, model: Supernet, batches: Batches, loss_fn: LossFn) -> Iterator[None]:
        """Context around the weight step (e.g. SDARTS perturbs the mixing weights inside it)."""
        yield

    def arch_loss(self, model: Supernet) -> torch.Tensor | None:
        """A regularizer added to the architecture objective."""
        return None

    def arch_grad(
        self, model: Supernet, grads: list[torch.Tensor], batches: Batches, loss_fn: LossFn
    ) -> list[torch.Tensor]:
        """Change the architecture gradient (one tensor per `model.arch_parameters()`, as search.order computed it).

        Runs eagerly in plain fp32 (no autocast, no TF32), `loss_fn` included, so it may take second derivatives.
        """
        return grads

    def needs_hessian(self, epoch: int, epochs: int) -> bool:
        """Whether this epoch's record must carry the dominant Hessian eigenvalue `hessian_eig`."""
        return False

    def on_epoch_end(self, epoch: int, epochs: int, record: dict[str, Any], genotype: Genotype) -> EarlyStop | None:
        """Read the finished epoch's record and derived genotype; an EarlyStop ends the search here."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass(frozen=True)
class StabilizerDef:
    schema: type
    cls: type[Stabilizer]


STABILIZERS: Registry[StabilizerDef] = Registry("stabilizer")
