"""Stabilizers, registered by name; `Stabilizers` applies several in the order they were given."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch

from nasctl.config import validate
from nasctl.stabilizers.base import STABILIZERS, Batches, LossFn, Stabilizer, StabilizerDef
from nasctl.spaces.base import Supernet

__all__ = ["STABILIZERS", "Batches", "Stabilizer", "StabilizerDef", "Stabilizers"]


class Stabilizers(Stabilizer):
    """Several stabilizers composed: each hook runs every member's hook in order."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.members: dict[str, Stabilizer] = {}
        for name, node in (cfg or {}).items():
            if name == "none":
                continue
            d = STABILIZERS.get(name)
            self.members[name] = d.cls(validate(node or {}, d.schema, f"stabilizer '{name}'"))

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

    def arch_grad(self, model: Supernet, grads: list[torch.Tensor], batches: Batches, lr: float) -> list[torch.Tensor]:
        for s in self.members.values():
            grads = s.arch_grad(model, grads, batches, lr)
        return grads

    def state_dict(self) -> dict[str, Any]:
        return {name: s.state_dict() for name, s in self.members.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, s in self.members.items():
            s.load_state_dict(state.get(name, {}))
