"""The fast path on a CUDA GPU: no host syncs inside a step, the same alphas as eager fp32, the memory budget.

Skipped without CUDA (tests/conftest.py). None of these ran in the session that wrote them (no GPU).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import nasctl
import nasctl.entry  # registers the schemas and resolvers of the stage configs
from nasctl.search.architect import Architect
from nasctl.search.stage import SearchLoop, run_search
from nasctl.stabilizers import Batches, Stabilizers
from nasctl.store import Run
from nasctl.train import Trainer
from nasctl.train.trainer import set_tf32
from tests.conftest import TINY_SEARCH, search_steps, supernet
from tests.unit.test_fast_path import update_gap

pytestmark = pytest.mark.gpu

CONF = nasctl.conf_dir()
EAGER = [
    "trainer.precision=fp32", "trainer.tf32=false", "trainer.channels_last=false", "trainer.compile=false",
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
    assert update_gap(alphas("regional", "trainer.compile=regional"), eager) < tolerance
    assert update_gap(alphas("tf32", "trainer.tf32=true"), eager) < tolerance
    assert update_gap(alphas("fast", *FAST), eager) < 0.25


def test_cuda_graphs_run_a_search(fashion, tmp_path):
    cfg = composed("search.epochs=1", *FAST, "trainer.cuda_graphs=true", "search.order=second")
    run = run_search(cfg, tmp_path / "graphs", [])
    with np.load(run.path / "alphas.npz") as f:
        assert all(np.isfinite(f[k]).all() for k in f.files)


@pytest.mark.parametrize("order", ["first", "second"])
def test_darts_search_at_batch_64_fits_in_12_gib(order, tmp_path):
    """The DARTS space (8 cells, 16 channels) on synthetic CIFAR-10 at batch 64, trainer=auto's CUDA switches."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=["dataset=synthetic", "dataset.subset=512", "search.batch_size=64",
                                           f"search.order={order}", "trainer=gpu", "trainer.progress=false"])
    torch.cuda.reset_peak_memory_stats()
    search_steps(cfg, tmp_path)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() < 12 * 2**30


def test_second_order_finite_difference_ignores_tf32():
    """The steps r v are below TF32's 10-bit resolution too: the two passes run in plain fp32."""
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        space = compose("search", overrides=list(TINY_SEARCH)).space
    model = supernet(space, 10, 1).cuda()
    x, y = torch.randn(8, 1, 16, 16, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    weights = model.weight_parameters()
    v = [1e-2 * torch.randn_like(w) for w in weights]
    arch = Architect(model, torch.optim.SGD(weights, lr=0.1), "second", Stabilizers({}), 3e-4, (0.5, 0.999), 1e-3,
                     contextlib.nullcontext)

    def hvp(tf32: bool) -> torch.Tensor:
        before = set_tf32(tf32)
        try:
            return torch.cat([h.flatten() for h in arch._mixed_hvp(Batches(x, y, x, y), weights, v)])
        finally:
            set_tf32(before[0])

    exact = hvp(False)
    assert exact.abs().max() > 0
    torch.testing.assert_close(hvp(True), exact, rtol=0, atol=0)
