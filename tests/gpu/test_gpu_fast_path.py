"""The fast path on a CUDA GPU: no host syncs inside a step, the same alphas as eager fp32, the memory budget.

Skipped without CUDA (tests/conftest.py). None of these ran in the session that wrote them (no GPU).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import nasctl
import nasctl.entry  # registers the schemas and resolvers of the stage configs
from nasctl.search.architect import Architect
from nasctl.search.stage import SearchLoop, run_search
from nasctl.spaces import create_supernet
from nasctl.stabilizers import Batches, Stabilizers
from nasctl.store import Run
from nasctl.train import Trainer
from tests.conftest import TINY_SEARCH
from tests.unit.test_fast_path import update_gap

pytestmark = pytest.mark.gpu

CONF = nasctl.conf_dir()
EAGER = [
    "trainer.precision=fp32", "trainer.channels_last=false", "trainer.compile=false",
    "trainer.cuda_graphs=false", "trainer.fused_optimizer=false",
]
FAST = ["trainer.precision=bf16", "trainer.channels_last=true", "trainer.compile=true", "trainer.fused_optimizer=true"]


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=[*TINY_SEARCH, "trainer.device=cuda", *overrides])


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("switches", [EAGER, [*EAGER, *FAST]], ids=["eager", "fast"])
def test_a_search_step_never_syncs_with_the_host(order, switches, fashion, tmp_path):
    cfg = composed(*switches, f"search.order={order}", "stabilizer=sdarts_adv")
    trainer = Trainer(cfg.trainer, Run(tmp_path))
    loop = SearchLoop(cfg, trainer, Run(tmp_path))
    batches = iter(loop.batches(0, 0))
    loop.step(next(batches), 0, 0)  # compiles, and allocates the optimizer state
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in (1, 2):
            batch = next(batches)
            trainer.begin_step()
            loop.step(batch, 0, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("order, tolerance", [("first", 0.02), ("second", 0.25)])  # see tests/unit/test_fast_path.py
def test_the_fast_path_gives_the_eager_alphas(order, tolerance, fashion, tmp_path):
    def alphas(name: str, *overrides: str) -> np.ndarray:
        cfg = composed("search.epochs=1", "search.steps_per_epoch=4", f"search.order={order}", *EAGER, *overrides)
        with np.load(run_search(cfg, tmp_path / name, []).path / "alphas.npz") as f:
            return np.concatenate([f[k][-1].ravel() for k in sorted(f.files)])

    eager = alphas("eager")
    assert update_gap(alphas("fused", "trainer.fused_optimizer=true"), eager) < 1e-5
    assert update_gap(alphas("nhwc", "trainer.channels_last=true"), eager) < tolerance
    assert update_gap(alphas("compiled", "trainer.compile=true"), eager) < tolerance
    assert update_gap(alphas("fast", *FAST), eager) < 0.25


def test_cuda_graphs_run_a_search(fashion, tmp_path):
    cfg = composed("search.epochs=1", *FAST, "trainer.cuda_graphs=true", "search.order=second")
    run = run_search(cfg, tmp_path / "graphs", [])
    with np.load(run.path / "alphas.npz") as f:
        assert all(np.isfinite(f[k]).all() for k in f.files)


@pytest.mark.parametrize("order", ["first", "second"])
def test_darts_search_at_batch_64_fits_in_12_gib(order):
    """The DARTS space (8 cells, 16 channels, conf/space/darts.yaml) on 32x32 inputs at batch 64, bf16 + NHWC."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        space = compose("search").space
    model = create_supernet(space, 10, 3).cuda().to(memory_format=torch.channels_last)
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4, fused=True)

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16)

    arch = Architect(model, w_opt, order, Stabilizers({}), 3e-4, (0.5, 0.999), 1e-3, autocast, {"fused": True})
    x, y = torch.randn(64, 3, 32, 32, device="cuda"), torch.randint(0, 10, (64,), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    for _ in range(2):
        arch.step(Batches(x, y, x, y), 0.025)
        w_opt.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        w_opt.step()
    assert torch.cuda.max_memory_allocated() < 12 * 2**30
