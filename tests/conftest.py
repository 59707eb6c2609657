"""Shared test helpers: the CLI in a temp dir (in this process or as one), tiny search and retrain settings, CUDA skipping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tiny test workloads: one thread is as fast and immune to oversubscription. Every process the tests
# start inherits it, so runs compared bit for bit (kill and resume) use the same reduction order.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
# The shared NAS-Bench-201 table, read in place (never copied into the repository); $NASCTL_NB201 overrides.
# Resolved, as nasctl resolves the paths it prints: a ../shared that is a symbolic link compares equal.
NB201_TABLE = Path(os.environ.get("NASCTL_NB201") or REPO.parent / "shared/benchmarks/nb201/nats_tss_test_acc_200ep.csv").resolve()
FASHION = Path("/usr/share/datasets/fashion-mnist")

# A search that takes seconds on 2 CPU cores: Fashion-MNIST subset, tiny supernet, two steps.
TINY_SEARCH = [
    "experiment=quickstart",
    "dataset.subset=256",
    "search.epochs=2",
    "search.batch_size=16",
    "search.steps_per_epoch=2",
    "search.eval_batches=1",
    "space.C=4",
    "space.layers=2",
    "trainer.progress=false",
]
TINY_ANY_SPACE = [a for a in TINY_SEARCH if not a.startswith("space.layers")]  # for spaces without `layers` (nb201)
# A retrain that takes seconds: a 3-cell, 4-channel network, two epochs of two steps (genotype= still to give).
TINY_RETRAIN = [
    "experiment=quickstart",
    "dataset.subset=256",
    "dataset.test_subset=64",
    "retrain.epochs=2",
    "retrain.batch_size=16",
    "retrain.steps_per_epoch=2",
    "retrain.net.C=4",
    "retrain.net.layers=3",
    "trainer.progress=false",
]


def darts_space(**overrides):
    """The DARTS space's config as conf/space/darts.yaml sets it (the one place of its defaults), with `overrides`."""
    from omegaconf import OmegaConf

    from nasctl.spaces.darts import DartsSpaceConfig

    return DartsSpaceConfig(**{**OmegaConf.to_container(OmegaConf.load(REPO / "conf/space/darts.yaml")), **overrides})


def supernet(cfg, num_classes: int, in_channels: int):
    """The registered space's supernet of a space config, validated as the search validates it."""
    from nasctl.spaces import space_config

    space, scfg = space_config(cfg)
    return space.build(scfg, num_classes, in_channels)


def search_steps(cfg, run_dir: Path, steps: int = 2):
    """The SearchLoop of `cfg` after `steps` steps of epoch 0, run as the trainer runs them (no checkpoints)."""
    from nasctl.search.stage import SearchLoop
    from nasctl.store import Run
    from nasctl.train import Trainer

    trainer = Trainer(cfg.trainer, Run(run_dir))
    loop = SearchLoop(cfg, trainer, Run(run_dir))
    batches = iter(loop.batches(0, 0))
    for step in range(steps):
        trainer.begin_step()
        loop.step(next(batches), 0, step)
    return loop


def require_nb201_table() -> Path:
    """The NAS-Bench-201 table, or skip the test where this checkout has no ../shared next to it."""
    if not NB201_TABLE.is_file():
        pytest.skip(f"the shared NAS-Bench-201 table is not at {NB201_TABLE} (set NASCTL_NB201)")
    return NB201_TABLE


@pytest.fixture
def nb201_table() -> Path:
    return require_nb201_table()


def nasctl(*args: str, cwd: Path, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m nasctl ARGS` in `cwd` and return the finished process (text output)."""
    full_env = {**os.environ, "NASCTL_NB201": str(NB201_TABLE), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "nasctl", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu"):  # not `in item.keywords`: that holds directory names too
            item.add_marker(skip)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """`cli(*args)` runs `nasctl ARGS` in this process in a temp dir; returns (exit status, stdout, stderr).

    The Typer app itself, so argv rewriting and Hydra's parsing are the real ones, without a process start-up.
    """
    from nasctl.cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NASCTL_NB201", str(NB201_TABLE))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("NASCTL_DEBUG", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exit_:
            app(list(args), prog_name="nasctl")
        out = capsys.readouterr()
        return exit_.value.code or 0, out.out, out.err

    return run


@pytest.fixture
def fashion() -> Path:
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    return FASHION
