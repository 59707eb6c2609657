"""Stabilizers, registered by name; `Stabilizers` applies several in the order they were given.

Composition (`stabilizer=[a,b]`): `configure` and `on_epoch_start` run in order, `weight_step`
contexts nest with the first given outermost, `arch_loss` terms add up, and `arch_grad` is a
pipeline (b changes what a returned), the Hessian is computed where any member needs it, and
the first member's `EarlyStop` ends the search. Two methods claiming the same `exclusive` resource (both
SDARTS variants perturb the mixing weights) are refused before any work starts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from omegaconf import OmegaConf

from nasctl.config import validate
from nasctl.errors import NasctlError
from nasctl.genotype import Genotype
from nasctl.spaces.base import Supernet
from nasctl.stabilizers import amended, beta_decay, darts_es, darts_minus, noisy, sdarts  # noqa: F401  (register)
from nasctl.stabilizers.base import STABILIZERS, Batches, EarlyStop, LossFn, Stabilizer, StabilizerDef

__all__ = ["STABILIZERS", "Batches", "EarlyStop", "LossFn", "Stabilizer", "StabilizerDef", "Stabilizers"]


def build(name: str, node: Any) -> Stabilizer:
    """One registered stabilizer from its config node (typed, complete, range-checked)."""
    d = STABILIZERS.get(name)
    what = f"stabilizer '{name}'"
    cfg = validate(node or {}, d.schema, what)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise NasctlError(f"Invalid {what} config: missing {', '.join(missing)} (see conf/stabilizer/{name}.yaml).")
    return d.cls(OmegaConf.to_object(cfg))


class Stabilizers(Stabilizer):
    """Several stabilizers composed: each hook runs every member's hook in order."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.members = {name: build(name, node) for name, node in (cfg or {}).items() if name != "none"}
        owners: dict[str, str] = {}
        for name, s in self.members.items():
            for resource in s.exclusive:
                if resource in owners:
                    raise NasctlError(
                        f"stabilizer=[{owners[resource]},{name}] cannot be combined: both take over the {resource} "
                        "of the search, so one would silently undo the other. Choose one of them."
                    )
                owners[resource] = name

    def configure(self, model: Supernet) -> None:
        for s in self.members.values():
            s.configure(model)

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.members.values():
            out.update(s.on_epoch_start(model, epoch, epochs))
        return out

    @contextlib.contextmanager
    def weight_step(self, model: Supernet, batches: Batches, loss_fn: LossFn) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for s in self.members.values():
                stack.enter_context(s.weight_step(model, batches, loss_fn))
            yield

    def arch_loss(self, model: Supernet) -> torch.Tensor | None:
        terms = [t for t in (s.arch_loss(model) for s in self.members.values()) if t is not None]
        return sum(terms) if terms else None

    def arch_grad(
        self, model: Supernet, grads: list[torch.Tensor], batches: Batches, loss_fn: LossFn
    ) -> list[torch.Tensor]:
        for s in self.members.values():
            grads = s.arch_grad(model, grads, batches, loss_fn)
        return grads

    def needs_hessian(self, epoch: int, epochs: int) -> bool:
        return any(s.needs_hessian(epoch, epochs) for s in self.members.values())

    def on_epoch_end(self, epoch: int, epochs: int, record: dict[str, Any], genotype: Genotype) -> EarlyStop | None:
        stops = [s.on_epoch_end(epoch, epochs, record, genotype) for s in self.members.values()]
        return next((stop for stop in stops if stop is not None), None)

    def state_dict(self) -> dict[str, Any]:
        return {name: s.state_dict() for name, s in self.members.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, s in self.members.items():
            s.load_state_dict(state.get(name, {}))
