"""`nasctl bench original=<checkout>`: the original code is imported from the checkout, stepped, and leaves no trace.

CI has no clone of quark0/darts, so a stand-in with its interface (Network(C, classes, layers, criterion,
steps, multiplier, stem_multiplier) whose alphas are made with `.cuda()`, `_loss`, `arch_parameters`, and
Architect(model, args).step(..., unrolled)) is written to the test's folder.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from hydra import compose, initialize_config_dir

import nasctl
from nasctl.config import register_schemas
from nasctl.errors import NasctlError
from nasctl.original import Original, code_dir, why_not

MODEL_SEARCH = """
import torch, torch.nn as nn
class Network(nn.Module):
    def __init__(self, C, num_classes, layers, criterion, steps=4, multiplier=4, stem_multiplier=3):
        super().__init__()
        self._criterion = criterion
        self.conv = nn.Conv2d(3, C, 3, padding=1)
        self.fc = nn.Linear(C, num_classes)
        self.alphas = torch.zeros(2, C).cuda().requires_grad_()
    def forward(self, x):
        h = self.conv(x).mean((2, 3))
        return self.fc(h * torch.softmax(self.alphas, -1).sum(0))
    def _loss(self, x, y):
        return self._criterion(self(x), y)
    def arch_parameters(self):
        return [self.alphas]
"""
ARCHITECT = """
import torch
class Architect:
    def __init__(self, model, args):
        self.model = model
        self.optimizer = torch.optim.Adam(model.arch_parameters(), lr=args.arch_learning_rate)
    def step(self, xt, yt, xv, yv, eta, network_optimizer, unrolled):
        assert not unrolled
        self.optimizer.zero_grad()
        self.model._loss(xv, yv).backward()
        self.optimizer.step()
"""


def config(*overrides: str):
    register_schemas()
    with initialize_config_dir(config_dir=str(nasctl.conf_dir()), version_base="1.3"):
        return compose("search", overrides=["dataset=synthetic", "dataset.subset=64", "search.batch_size=8",
                                            "space.C=4", "trainer=cpu", *overrides])


def batches():
    while True:
        yield (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))), (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))


def test_the_original_code_runs_from_a_checkout_and_leaves_no_trace(tmp_path):
    (tmp_path / "cnn").mkdir()
    (tmp_path / "cnn/model_search.py").write_text(textwrap.dedent(MODEL_SEARCH))
    (tmp_path / "cnn/architect.py").write_text(textwrap.dedent(ARCHITECT))
    cuda_before = torch.Tensor.cuda
    orig = Original(str(tmp_path), config(), torch.device("cpu"), batches())
    start = orig.net.alphas.detach().clone()
    for i in range(3):
        orig.step(i)
    assert not orig.net.alphas.detach().equal(start)  # its architect stepped
    assert torch.Tensor.cuda is cuda_before and "model_search" not in sys.modules  # nothing left patched or imported
    assert orig.net.conv.out_channels == 4  # the case's width reached its Network


def test_the_original_is_refused_where_its_code_has_no_such_search(tmp_path):
    assert why_not(config()) == ""
    assert "first order" in why_not(config("search.order=second"))
    assert "first order" in why_not(config("space=nb201"))
    assert "stabilizer" in why_not(config("stabilizer=sdarts_rs"))
    assert "relaxation" in why_not(config("relaxation=gdas"))
    with pytest.raises(NasctlError, match="quark0/darts"):
        code_dir(str(tmp_path))
