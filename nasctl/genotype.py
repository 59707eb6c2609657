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
