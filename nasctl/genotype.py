"""Genotypes: the discrete architectures that `derive` writes and `retrain` reads.

A DARTS-cell genotype mirrors the field's `Genotype` namedtuple (two (op, input) pairs per
intermediate node; input 0/1 = the two previous cells, 2.. = earlier nodes). An NB201
genotype is the benchmark's arch string. Both are stored as JSON with a `space` key.

Each genotype type owns what the stages and the report do with it: its short form for tables,
its rows for the terminal, its cells as graphs, its skip count and which benchmark (if any)
looks it up. A space names its genotype type (`Space.genotype`); nothing switches on a kind.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Union

from nasctl.errors import NasctlError

OP_ABBREV = {"none": "-", "skip_connect": "skip", "max_pool_3x3": "max", "avg_pool_3x3": "avg",
             "sep_conv_3x3": "sep3", "sep_conv_5x5": "sep5", "dil_conv_3x3": "dil3", "dil_conv_5x5": "dil5",
             "nor_conv_1x1": "c1", "nor_conv_3x3": "c3"}  # op names in the report's short genotypes
Edge = tuple[str, str, str]  # (from node, to node, op) of a cell drawn as a graph
Rows = tuple[tuple[str, ...], list[tuple[str, ...]]]  # (column headers, rows) of a genotype shown as a table


def darts_node(j: int) -> str:
    """A DARTS cell's input index as a node name: the two previous cells, then the intermediate nodes."""
    return ("$c_{k-2}$", "$c_{k-1}$")[j] if j < 2 else str(j - 2)


@dataclass(frozen=True)
class CellGenotype:
    """A DARTS-cell architecture (DARTS space and RobustDARTS S1-S4)."""

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    space: str = "darts"

    what: ClassVar[str] = "a DARTS-cell genotype"
    benchmark: ClassVar[str | None] = None  # no tabular benchmark: it is scored by retraining
    inputs_per_node: ClassVar[int | None] = 2  # each node keeps its two strongest inputs, never through `none`

    def short(self) -> str:
        """The normal cell's op:input pairs, nodes separated by `;`."""
        pairs = [f"{OP_ABBREV.get(op, op)}:{j}" for op, j in self.normal]
        return "; ".join(" ".join(pairs[i:i + 2]) for i in range(0, len(pairs), 2))

    def skip_count(self) -> int:
        """Skip connections in the normal cell."""
        return sum(op == "skip_connect" for op, _ in self.normal)

    def rows(self) -> Rows:
        return ("cell", "node", "input", "op"), [
            (cell if k == 0 else "", str(2 + k // 2), str(j), op)
            for cell in ("normal", "reduce") for k, (op, j) in enumerate(getattr(self, cell))
        ]

    def graphs(self) -> dict[str, tuple[list[str], list[Edge]]]:
        """Per cell type: the nodes (inputs first, output last) and the labelled edges."""
        out = {}
        for cell in ("normal", "reduce"):
            pairs, concat = getattr(self, cell), getattr(self, f"{cell}_concat")
            nodes = [darts_node(0), darts_node(1), *map(str, range(len(pairs) // 2)), "$c_{k}$"]
            edges = [(darts_node(j), str(e // 2), op) for e, (op, j) in enumerate(pairs)]
            out[cell] = (nodes, edges + [(darts_node(j), "$c_{k}$", "") for j in concat])
        return out

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

    what: ClassVar[str] = "an NB201 arch string"
    benchmark: ClassVar[str | None] = "nb201"  # the `paths.<key>` table that scores it
    inputs_per_node: ClassVar[int | None] = None  # every edge is kept; `none` is an op like the others

    def short(self) -> str:
        """The ops per node, nodes separated by `;`."""
        return "; ".join(" ".join(OP_ABBREV.get(op, op) for op, _ in node) for node in self.nodes)

    def skip_count(self) -> int:
        """Skip connections in the one cell."""
        return sum(op == "skip_connect" for op in self.ops)

    def rows(self) -> Rows:
        return ("node", "inputs (op~from)"), [
            (str(i), "  ".join(f"{op}~{j}" for op, j in node)) for i, node in enumerate(self.nodes, start=1)
        ]

    def graphs(self) -> dict[str, tuple[list[str], list[Edge]]]:
        """The one cell: nodes 0..3 and its edges other than `none`."""
        edges = [(str(j), str(i), op) for i, node in enumerate(self.nodes, start=1) for op, j in node]
        return {"cell": ([str(i) for i in range(len(self.nodes) + 1)], [e for e in edges if e[2] != "none"])}

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
            raise NasctlError(f"Malformed genotype JSON: {exc}; expected {{\"normal\": [[\"sep_conv_3x3\", 0], ...], "
                              '"normal_concat": [2, 3, 4, 5], "reduce": [...], "reduce_concat": [...]}.') from None
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
