"""SDARTS (Chen & Hsieh, ICML 2020): the weight step sees perturbed mixing weights softmax(alpha) + delta.

Follows `xiangning-chen/SmoothDARTS` (sota/cnn/train_search.py:201-234, model_search.py:157-177,
attacker/perturb.py:11-44). The perturbation lives on the simplex, not on the logits: RS draws
delta ~ U[-eps, eps] elementwise; ADV finds it by L-inf PGD with sign steps on the training batch,
in eval mode, and keeps the clean point if the attack did not raise the loss. Each perturbed row is
projected back by `project`. eps ramps linearly per epoch. The architecture step is plain DARTS
and alpha itself is never modified (the weights go in through `Supernet.mixing_override`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING

from nasctl.errors import NasctlError
from nasctl.spaces.base import Supernet
from nasctl.stabilizers.base import STABILIZERS, Batches, LossFn, Stabilizer, StabilizerDef

Mixing = dict[str, torch.Tensor]


@dataclass
class SdartsRsConfig:
    epsilon: float = MISSING  # eps_max: eps_e = epsilon_start + (epsilon - epsilon_start) * e / epochs
    epsilon_start: float = MISSING  # eps at epoch 0

    def __post_init__(self) -> None:
        if not 0 <= self.epsilon_start <= self.epsilon:
            raise NasctlError(f"SDARTS needs 0 <= epsilon_start <= epsilon, got {self.epsilon_start}, {self.epsilon}.")


@dataclass
class SdartsAdvConfig(SdartsRsConfig):
    steps: int = MISSING  # PGD steps
    step_scale: float = MISSING  # step size = step_scale * eps / steps (the code: 2 eps / steps)
    random_start: bool = MISSING  # start from a projected U[-eps, eps] point instead of the clean one

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.step_scale <= 0:
            raise NasctlError(f"sdarts_adv needs steps >= 1 and step_scale > 0, got {self.steps}, {self.step_scale}.")


def project(w: torch.Tensor) -> torch.Tensor:
    """SDARTS's row-wise `clip`: clamp to [0, 1], a row clamped to all zeros becomes one-hot at its
    pre-clamp argmax, then divide by the row sum."""
    top = F.one_hot(w.argmax(-1), w.shape[-1]).to(w.dtype)
    w = w.clamp(0, 1)
    w = torch.where(w.sum(-1, keepdim=True) > 0, w, top)
    return w / w.sum(-1, keepdim=True)


def uniform_like(w: torch.Tensor, eps: float) -> torch.Tensor:
    return torch.empty_like(w).uniform_(-eps, eps)


class SdartsRS(Stabilizer):
    """Random smoothing: the weight step runs at project(softmax(alpha) + U[-eps, eps])."""

    exclusive = ("mixing",)
    requires = ("mixing_weights",)

    def on_epoch_start(self, model: Supernet, epoch: int, epochs: int) -> dict[str, float]:
        c = self.cfg
        self.epsilon = c.epsilon_start + (c.epsilon - c.epsilon_start) * epoch / epochs
        return {"sdarts_epsilon": self.epsilon}

    @contextlib.contextmanager
    def weight_step(self, model: Supernet, batches: Batches, loss_fn: LossFn) -> Iterator[None]:
        with torch.no_grad():
            clean = model.mixing()
        with model.mixing_override(self.perturb(model, clean, batches, loss_fn)):
            yield

    def perturb(self, model: Supernet, clean: Mixing, batches: Batches, loss_fn: LossFn) -> Mixing:
        return {k: project(w + uniform_like(w, self.epsilon)) for k, w in clean.items()}


class SdartsADV(SdartsRS):
    """Adversarial: the weight step runs at the (projected) PGD maximiser of the training loss."""

    def perturb(self, model: Supernet, clean: Mixing, batches: Batches, loss_fn: LossFn) -> Mixing:
        c, eps = self.cfg, self.epsilon
        step = c.step_scale * eps / c.steps

        def loss(weights: Mixing) -> torch.Tensor:
            with model.mixing_override(weights):
                return loss_fn(batches.x_train, batches.y_train)

        training = model.training
        model.eval()  # the reference attacks with BN running statistics (and no NoisyDARTS noise)
        try:
            with torch.no_grad():
                before = loss(clean)
            adv = {k: project(w + uniform_like(w, eps)) for k, w in clean.items()} if c.random_start else clean
            for _ in range(c.steps):
                adv = {k: w.detach().requires_grad_() for k, w in adv.items()}
                grads = torch.autograd.grad(loss(adv), list(adv.values()), materialize_grads=True)
                with torch.no_grad():
                    adv = {
                        k: project(clean[k] + (w + step * g.sign() - clean[k]).clamp(-eps, eps))
                        for (k, w), g in zip(adv.items(), grads)
                    }
            with torch.no_grad():
                after = loss(adv)
        finally:
            model.train(training)
        failed = before > after  # the reference keeps the clean point then (no host sync here)
        return {k: torch.where(failed, clean[k], adv[k]) for k in clean}


STABILIZERS.register("sdarts_rs")(StabilizerDef(SdartsRsConfig, SdartsRS))
STABILIZERS.register("sdarts_adv")(StabilizerDef(SdartsAdvConfig, SdartsADV))
