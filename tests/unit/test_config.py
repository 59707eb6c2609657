"""conf/ is the one source of defaults: the schemas hold none, and every primary config composes complete."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

from nasctl import conf_dir
from nasctl import config as C
from nasctl.config import register_schemas
from nasctl.relaxations import RELAXATIONS
from nasctl.selection.darts_pt import DartsPTConfig
from nasctl.spaces import SPACES
from nasctl.stabilizers import STABILIZERS

CONF = Path(conf_dir())
REQUIRED = {"retrain": {"genotype"}}  # keys the user must give (`???` in the YAML)
SCHEMAS = {
    **{cls.__name__: cls for cls in (C.SearchConfig, C.DeriveConfig, C.RetrainConfig, C.EvaluateConfig, C.ReportConfig,
                                     C.BenchConfig, C.BenchCase, C.SpeedSwitches)},
    **{f"space {n}": SPACES.get(n).schema for n in SPACES.names()},
    **{f"stabilizer {n}": STABILIZERS.get(n).schema for n in STABILIZERS.names()},
    **{f"relaxation {n}": RELAXATIONS.get(n).schema for n in RELAXATIONS.names()},
    "selection darts_pt": DartsPTConfig,
}


def code_defaults(schema: type, prefix: str = "") -> list[str]:
    """The keys below `schema` that carry a value in code (anything but MISSING, a nested schema, an empty map)."""
    found = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        if f.default is not dataclasses.MISSING:
            if f.default is not MISSING and f"{schema.__name__}.{f.name}" not in C.OPTION_KEYS:
                found.append(key)
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if dataclasses.is_dataclass(value):
                found += code_defaults(type(value), f"{key}.")
            elif value != {}:
                found.append(key)
    return found


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_a_schema_sets_no_default_conf_sets(name):
    """A default written in a dataclass as well as in conf/ is a default in two places: only conf/ holds one."""
    assert code_defaults(SCHEMAS[name]) == []


def composed(primary: str, overrides: list[str]):
    register_schemas()
    with initialize_config_dir(str(CONF), version_base=None):
        return compose(primary, overrides=overrides)


def options(group: str) -> list[str]:
    return sorted(p.relative_to(CONF / group).with_suffix("").as_posix() for p in (CONF / group).rglob("*.yaml"))


CASES = [
    *[(p, []) for p in ("search", "derive", "retrain", "evaluate", "report", "bench")],
    *[("search", [f"space={s}"]) for s in options("space")],
    *[("search", [f"dataset={d}"]) for d in options("dataset")],
    *[("search", [f"trainer={t}"]) for t in options("trainer")],
    *[("search", [f"stabilizer={s}"]) for s in options("stabilizer")],
    *[("search", [f"relaxation={r}"]) for r in options("relaxation")],
    *[("search", [f"experiment={e}"]) for e in options("experiment")],
    *[("retrain", [f"recipe={r}"]) for r in options("recipe")],
    ("retrain", ["experiment=quickstart"]),
    *[("derive", [f"selection={s}"]) for s in options("selection")],
]


@pytest.mark.parametrize("primary, overrides", CASES, ids=[f"{p}:{','.join(o)}" for p, o in CASES])
def test_every_primary_config_composes_with_every_value_set(primary, overrides):
    cfg = composed(primary, overrides)
    assert set(OmegaConf.missing_keys(cfg)) == REQUIRED.get(primary, set())


def test_tensorboard_has_one_default():
    assert composed("search", []).trainer.tensorboard is OmegaConf.load(CONF / "trainer/auto.yaml").tensorboard


def test_a_shared_preset_gives_each_stage_its_own_part():
    search, retrain = composed("search", ["experiment=quickstart"]), composed("retrain", ["experiment=quickstart"])
    assert (search.search.epochs, retrain.retrain.epochs) == (4, 3)
    assert search.dataset.subset == retrain.dataset.subset == 2000 and "retrain" not in search
