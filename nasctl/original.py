"""The original DARTS code as a bench reference: `nasctl bench original=<checkout of quark0/darts>`.

Its `cnn/model_search.py` and `cnn/architect.py` are imported at run time from the checkout the user
names (nothing of them is in nasctl) and their first-order search step is timed beside nasctl's at the
case's settings: the architect's `step(..., unrolled=False)`, then the weight step of its
`train_search.py:150-155` (forward, loss, backward, clip, SGD). Their data loading is not timed; the
nasctl step it is compared with includes its on-device crop and flip.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import torch
from omegaconf import DictConfig
from torch import nn

from nasctl.errors import NasctlError


def code_dir(checkout: str) -> Path:
    """The checkout's `cnn/` folder (or the folder itself when it holds model_search.py)."""
    for d in (Path(checkout), Path(checkout) / "cnn"):
        if (d / "model_search.py").is_file() and (d / "architect.py").is_file():
            return d
    raise NasctlError(f"bench original={checkout}: no model_search.py and architect.py there or in its cnn/ "
                      "(clone https://github.com/quark0/darts and give its path).")


def why_not(ccfg: DictConfig) -> str:
    """Why the original code cannot run this case ('' when it can): it has only first-order DARTS on RGB."""
    s = ccfg.search
    if ccfg.space.name != "darts" or s.order != "first" or ccfg.dataset.channels != 3:
        return "the original code runs the darts space, first order, on 3-channel images"
    if (ccfg.get("relaxation") or {}).get("name", "darts") != "darts" or set(ccfg.stabilizer or {}) - {"none"}:
        return "the original code has no relaxation or stabilizer but DARTS's"
    return ""


@contextlib.contextmanager
def imported(folder: Path) -> Iterator[tuple[ModuleType, ModuleType]]:
    """Their modules, imported from `folder` under their own names, removed from sys.modules afterwards."""
    names = ("model_search", "architect", "operations", "genotypes", "utils")
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("model_search"), importlib.import_module("architect")
    finally:
        sys.path.remove(str(folder))
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


@contextlib.contextmanager
def cuda_calls_to(device: torch.device) -> Iterator[None]:
    """Their `.cuda()` calls (alphas, `new()`) place tensors and modules on `device` instead."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *a, **k: self.to(device)  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved  # type: ignore[method-assign]


class Original:
    """Their supernet, architect and weight optimizer at a search case's settings; `step` is their search step."""

    per_step = 1  # images per step: search rates are steps/s

    def __init__(self, checkout: str, ccfg: DictConfig, device: torch.device, batches: Iterator[tuple]) -> None:
        s, sp = ccfg.search, ccfg.space
        self.device = device
        with imported(code_dir(checkout)) as (model_search, architect), cuda_calls_to(device):
            torch.manual_seed(ccfg.seed)
            self.net = model_search.Network(sp.C, ccfg.dataset.num_classes, sp.layers, nn.CrossEntropyLoss(),
                                            sp.steps, sp.multiplier, sp.stem_multiplier).to(device)
            self.w_opt = torch.optim.SGD(self.net.parameters(), s.w_lr, momentum=s.w_momentum, weight_decay=s.w_weight_decay)
            args = SimpleNamespace(momentum=s.w_momentum, weight_decay=s.w_weight_decay,
                                   arch_learning_rate=s.arch_lr, arch_weight_decay=s.arch_weight_decay)
            self.architect = architect.Architect(self.net, args)
        self.grad_clip, self.lr = s.grad_clip, s.w_lr
        # (x_train, y_train, x_val, y_val) from nasctl's loader, four of them, reused
        self.batches = [tuple(t for pair in next(batches) for t in pair) for _ in range(4)]

    def step(self, i: int) -> None:
        x_tr, y_tr, x_val, y_val = self.batches[i % len(self.batches)]
        self.net.train()
        self.architect.step(x_tr, y_tr, x_val, y_val, self.lr, self.w_opt, unrolled=False)
        self.w_opt.zero_grad()
        loss = self.net._criterion(self.net(x_tr), y_tr)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.w_opt.step()

