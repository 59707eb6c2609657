"""Second-derivative paths run in plain fp32 whatever trainer.precision says: under bf16 they equal fp32."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import nasctl
import nasctl.entry  # noqa: F401  (registers the schemas and resolvers of conf/search.yaml)
from nasctl.search.architect import Architect
from nasctl.search.stage import SearchLoop
from nasctl.spaces.darts import DartsSupernet
from nasctl.stabilizers import Batches, Stabilizers
from nasctl.store import Run
from nasctl.train import Trainer, seed_everything
from tests.conftest import darts_space
from tests.unit.test_architect import smooth

CONF = nasctl.conf_dir()
NB201 = ["experiment=quickstart", "space=nb201", "space.C=4", "space.N=1", "dataset.subset=256", "search.batch_size=16",
         "search.eval_batches=1", "trainer.progress=false", "diagnostics.hessian_every=1", "diagnostics.hessian_method=exact"]


def bf16() -> torch.autocast:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_the_amended_term_under_bf16_autocast_equals_fp32():
    torch.manual_seed(0)
    model = DartsSupernet(darts_space(ops=["none", "skip_connect", "sep_conv_3x3"], C=4, layers=3), 10, 1)
    smooth(model)
    g = torch.Generator().manual_seed(1)
    b = Batches(torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 10, (16,), generator=g),
                torch.randn(16, 1, 12, 12, generator=g), torch.randint(0, 10, (16,), generator=g))
    hooks = Stabilizers({"amended": OmegaConf.load(CONF / "stabilizer" / "amended.yaml")})
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9)
    alphas0 = [a.detach().clone() for a in model.arch_parameters()]

    def amended_term(autocast) -> torch.Tensor:
        """What the hook adds to the architect's own first-order gradient in one real step."""
        with torch.no_grad():
            for a, a0 in zip(model.arch_parameters(), alphas0):
                a.copy_(a0)
        arch = Architect(model, w_opt, "first", hooks, 3e-4, (0.5, 0.999), 1e-3, autocast)
        direct = arch.first_order(b)
        arch.step(b, 0.025)
        return torch.cat([(a.grad - d).flatten() for a, d in zip(model.arch_parameters(), direct)])

    fp32 = amended_term(lambda: torch.autocast("cpu", enabled=False))
    assert fp32.norm() > 0
    assert rel(amended_term(bf16), fp32) < 1e-5  # bf16 products: ~20 % off


@pytest.mark.slow
def test_the_hessian_diagnostic_of_a_bf16_search_equals_fp32(fashion, tmp_path):
    def eigenvalue(precision: str) -> float:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose("search", overrides=[*NB201, f"trainer.precision={precision}", "trainer.compile=false"])
        seed_everything(cfg.seed)
        run = Run.create(tmp_path / precision, "search", cfg.seed, [], cfg)
        loop = SearchLoop(cfg, Trainer(cfg.trainer, run), run)
        return loop.end_epoch(0)["hessian_eig"]

    fp32 = eigenvalue("fp32")
    assert eigenvalue("bf16") == pytest.approx(fp32, rel=1e-5)  # a bf16 Hessian: ~8 % off
