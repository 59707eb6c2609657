"""All stabilizers at once in a real search on CUDA (bf16 autocast, channels_last), and the Hessian diagnostic."""

from __future__ import annotations

import json
import math

import pytest
from hydra import compose, initialize_config_dir

import nasctl
import nasctl.entry  # noqa: F401  (registers the schemas and resolvers of conf/search.yaml)
from nasctl.search.stage import run_search

TINY = ["dataset=fashion_mnist", "trainer=gpu", "trainer.progress=false", "dataset.subset=256", "search.batch_size=32",
        "search.epochs=2", "search.steps_per_epoch=2", "search.eval_batches=1", "space.C=8", "space.layers=3",
        "diagnostics.hessian_every=1"]


@pytest.mark.gpu
@pytest.mark.parametrize("stab", ["[sdarts_adv,darts_minus,noisy,amended,beta_decay]", "[sdarts_rs,darts_minus]"])
def test_stabilizers_search_on_cuda(stab, fashion, tmp_path):
    with initialize_config_dir(config_dir=str(nasctl.conf_dir()), version_base="1.3"):
        cfg = compose("search", overrides=[*TINY, f"stabilizer={stab}"])
    run = run_search(cfg, tmp_path / "run", [])
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and run.manifest["device"].startswith("cuda")
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["hessian_eig"]) for r in records)
