"""Genotypes: the discrete architectures that `derive` writes and `retrain` reads.

A DARTS-cell genotype mirrors the field's `Genotype` namedtuple (two (op, input) pairs per
intermediate node; input 0/1 = the two previous cells, 2.. = earlier nodes). An NB201
genotype is the benchmark's arch string. Both are stored as JSON with a `space` key.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from nasctl.errors import NasctlError


@dataclass(frozen=True)
class CellGenotype:
    """A DARTS-cell architecture (DARTS space and RobustDARTS S1-S4)."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    space: str = "darts"

    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "normal": [list(e) for e in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [list(e) for e in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    def __str__(self) -> str:
        def cell(edges: tuple[tuple[str, int], ...]) -> str:
            return "[" + ", ".join(f"('{o}', {i})" for o, i in edges) + "]"

        return (
            f"Genotype(normal={cell(self.normal)}, normal_concat={list(self.normal_concat)}, "
            f"reduce={cell(self.reduce)}, reduce_concat={list(self.reduce_concat)})"
        )


@dataclass(frozen=True)
class ArchString:
    """An NAS-Bench-201 architecture, e.g. `|nor_conv_3x3~0|+|skip_connect~0|none~1|+|...|`."""

    arch: str
    space: str = "nb201"

    def to_dict(self) -> dict:
        return {"space": self.space, "arch": self.arch}

    @property
    def nodes(self) -> list[list[tuple[str, int]]]:
        """Per node 1, 2, 3: its (op, input node) edges, read from the `|op~input|` tokens."""
        return [[(op, int(j)) for op, j in (tok.split("~") for tok in node.split("|"))]
                for node in self.arch.strip("|").split("|+|")]

    @property
    def ops(self) -> list[str]:
        """The edge ops in string order."""
        return [op for node in self.nodes for op, _ in node]

    def __str__(self) -> str:
        return self.arch


Genotype = Union[CellGenotype, ArchString]
CELL_KEYS = ("normal", "normal_concat", "reduce", "reduce_concat")


def _edges(value: object, key: str) -> tuple[tuple[str, int], ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(e, (list, tuple)) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], int)
        for e in value
    ):
        raise NasctlError(f"Genotype field {key!r} must be a list of [op, input] pairs, got {value!r}.")
    return tuple((str(o), int(i)) for o, i in value)


def from_dict(d: dict) -> Genotype:
    """Build a genotype from its JSON dict; a wrong shape is a NasctlError."""
    if not isinstance(d, dict):
        raise NasctlError(f"A genotype must be a JSON object, got {type(d).__name__}.")
    if "arch" in d:
        return ArchString(str(d["arch"]), str(d.get("space", "nb201")))
    missing = [k for k in CELL_KEYS if k not in d]
    if missing:
        raise NasctlError(
            f"Genotype is missing {', '.join(missing)}; expected keys {', '.join(CELL_KEYS)} "
            "(DARTS cell) or 'arch' (NAS-Bench-201)."
        )
    return CellGenotype(
        normal=_edges(d["normal"], "normal"),
        normal_concat=tuple(int(i) for i in d["normal_concat"]),
        reduce=_edges(d["reduce"], "reduce"),
        reduce_concat=tuple(int(i) for i in d["reduce_concat"]),
        space=str(d.get("space", "darts")),
    )


def _literal(node: ast.expr) -> object:
    """Evaluate a literal, also accepting `range(a, b)` as the original repos print it."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "range":
        return list(range(*[ast.literal_eval(a) for a in node.args]))
    return ast.literal_eval(node)


def parse(text: str) -> Genotype:
    """Parse JSON, the `Genotype(normal=[...], ...)` literal of the papers' code, or an NB201 arch string."""
    text = text.strip()
    if text.startswith("|"):
        return ArchString(text)
    if text.startswith("{"):
        try:
            return from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise NasctlError(f"Malformed genotype JSON: {exc}.") from None
    try:
        call = ast.parse(text, mode="eval").body
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Genotype"):
            raise ValueError("not a Genotype(...) call")
        return from_dict({kw.arg: _literal(kw.value) for kw in call.keywords})
    except (SyntaxError, ValueError) as exc:
        raise NasctlError(
            f"Cannot read a genotype from {text[:80]!r}: expected JSON, a Genotype(...) literal "
            f"or an NB201 arch string ({exc})."
        ) from None


def load(path: str | Path) -> Genotype:
    """Read a genotype file (JSON or a pasted Genotype(...) literal)."""
    p = Path(path)
    if not p.is_file():
        raise NasctlError(f"Genotype file {p} does not exist.")
    try:
        return parse(p.read_text())
    except NasctlError as exc:
        raise NasctlError(f"{p}: {exc}") from None


def dumps(g: Genotype) -> str:
    return json.dumps(g.to_dict(), indent=2)


# -- published genotypes ------------------------------------------------------------------------
def _darts_cell(normal: list[tuple[str, int]], reduce: list[tuple[str, int]]) -> CellGenotype:
    """A DARTS-space genotype with the usual concat of nodes 2..5 in both cells."""
    return CellGenotype(tuple(normal), (2, 3, 4, 5), tuple(reduce), (2, 3, 4, 5))


# Each entry is the released cell, as written in the cited genotypes.py (parameter counts and the
# papers' figures are compared in tests/unit/test_zoo_params.py and docs/methods.md).
ZOO: dict[str, CellGenotype] = {
    # quark0/darts:cnn/genotypes.py DARTS_V1 (first-order DARTS)
    "darts_v1": _darts_cell(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)],
    ),
    # quark0/darts:cnn/genotypes.py DARTS_V2 (second-order DARTS; `DARTS = DARTS_V2` there)
    "darts_v2": _darts_cell(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    ),
    # xiangning-chen/SmoothDARTS:sota/cnn/genotypes.py c10_s5_random (SDARTS-RS, DARTS space = "s5")
    "sdarts_rs": _darts_cell(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 0),
         ("sep_conv_3x3", 3), ("skip_connect", 1), ("sep_conv_3x3", 1), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("dil_conv_5x5", 3), ("max_pool_3x3", 0), ("sep_conv_3x3", 2), ("sep_conv_5x5", 3)],
    ),
    # xiangning-chen/SmoothDARTS:sota/cnn/genotypes.py c10_s5_pgd (SDARTS-ADV)
    "sdarts_adv": _darts_cell(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 1), ("skip_connect", 0),
         ("sep_conv_5x5", 0), ("dil_conv_3x3", 3), ("dil_conv_3x3", 4), ("skip_connect", 0)],
        [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("skip_connect", 3), ("skip_connect", 2), ("skip_connect", 2), ("sep_conv_5x5", 4)],
    ),
    # Meituan-AutoML/DARTS-:src/eval/genotypes.py cifar10_s0_best (= cifar10_s0_0; S0 is "s5" in the code)
    "darts_minus": _darts_cell(
        [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("dil_conv_3x3", 2),
         ("skip_connect", 1), ("sep_conv_3x3", 0), ("skip_connect", 1), ("sep_conv_3x3", 0)],
        [("sep_conv_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("skip_connect", 2), ("skip_connect", 3), ("skip_connect", 2), ("skip_connect", 3)],
    ),
    # xiaomi-automl/NoisyDARTS:genotypes.py noisy_darts_a (NoisyDARTS-a: Gaussian, additive, sigma 0.2)
    "noisy_darts_a": _darts_cell(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
         ("dil_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4), ("dil_conv_3x3", 3)],
        [("max_pool_3x3", 0), ("dil_conv_5x5", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("skip_connect", 2), ("skip_connect", 3), ("skip_connect", 2), ("dil_conv_5x5", 4)],
    ),
    # Sunshine-Ye/Beta-DARTS:sota/cnn/genotypes.py `genotype` (= `DARTS`, the default --arch of sota/cnn/train.py)
    "beta_darts": _darts_cell(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("dil_conv_3x3", 3), ("skip_connect", 0)],
        [("skip_connect", 1), ("max_pool_3x3", 0), ("avg_pool_3x3", 0), ("sep_conv_5x5", 2),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("dil_conv_3x3", 4)],
    ),
    # yuhuixu1993/PC-DARTS:genotypes.py:78 PC_DARTS_cifar (@b74702f; `PCDARTS = PC_DARTS_cifar`, :82)
    "pc_darts": _darts_cell(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)],
    ),
    # yuhuixu1993/PC-DARTS:genotypes.py:79 PC_DARTS_image (@b74702f; searched on ImageNet)
    "pc_darts_imagenet": _darts_cell(
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)],
    ),
    # D-X-Y/AutoDL-Projects:xautodl/nas_infer_model/DXYs/genotypes.py:144 GDAS_V1 (@f46486e; node pairs flattened)
    "gdas": _darts_cell(
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
    ),
    # D-X-Y/AutoDL-Projects:lib/nas/genotypes.py:204 GDAS_FG (@8985bbe, the 2019 tree; weights dropped):
    # the normal cell of GDAS_F1 (searched with the fixed reduction cell) and the reduction cell of GDAS_V1
    "gdas_fg": _darts_cell(
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_3x3", 2),
         ("skip_connect", 0), ("sep_conv_3x3", 2), ("skip_connect", 0), ("sep_conv_3x3", 2)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 1)],
    ),
    # xiangning-chen/DrNAS:DARTS-space/genotypes.py:82 DrNAS_cifar10 (@f2caa4d)
    "drnas": _darts_cell(
        [("sep_conv_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2), ("dil_conv_5x5", 3)],
        [("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("dil_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("sep_conv_5x5", 1), ("dil_conv_5x5", 3), ("skip_connect", 4), ("sep_conv_5x5", 1)],
    ),
    # xiangning-chen/DrNAS:DARTS-space/genotypes.py:83 DrNAS_imagenet (@f2caa4d; searched on ImageNet)
    "drnas_imagenet": _darts_cell(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 0), ("dil_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("max_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 2), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1)],
    ),
}


def resolve_genotype(spec: str, run_root: str | Path) -> Genotype:
    """A zoo name, `latest` (the latest search run's genotype), a file, a search run directory or a literal."""
    from nasctl.store import resolve_run  # here: the store imports torch, the genotype module does not

    spec = str(spec).strip()
    if spec in ZOO:
        return ZOO[spec]
    if spec == "latest":
        return load(resolve_run("latest", run_root, "search").path / "genotype.json")
    if spec.startswith(("{", "|", "Genotype(")):
        return parse(spec)
    path = Path(spec)
    if path.is_dir():
        return load(path / "genotype.json")
    if path.is_file():
        return load(path)
    raise NasctlError(
        f"genotype={spec!r} is neither a published genotype ({', '.join(ZOO)}), nor `latest`, nor an existing "
        "file or search run directory, nor a JSON / Genotype(...) / NB201 arch-string literal."
    )
