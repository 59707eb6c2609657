"""Genotypes: JSON round trip, the papers' Genotype(...) literal, malformed input, resolve_genotype."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasctl import genotype as G
from nasctl.errors import NasctlError
from nasctl.store import Run

# DARTS_V2 as quark0/darts prints it, but with range(2, 6) as the later repositories write the concat
DARTS_V2_LITERAL = (
    "Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
    "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], normal_concat=range(2, 6), "
    "reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), ('max_pool_3x3', 1), ('max_pool_3x3', 0), "
    "('skip_connect', 2), ('skip_connect', 2), ('max_pool_3x3', 1)], reduce_concat=range(2, 6))"
)
ARCH = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("name", sorted(G.ZOO))
def test_json_round_trip_of_every_zoo_entry(name: str) -> None:
    g = G.ZOO[name]
    assert G.parse(G.dumps(g)) == g
    assert G.from_dict(json.loads(G.dumps(g))) == g


def test_arch_string_round_trip() -> None:
    g = G.parse(ARCH)
    assert isinstance(g, G.ArchString) and str(g) == ARCH
    assert G.parse(G.dumps(g)) == g


def test_python_literal_with_range_parses_to_the_zoo_entry() -> None:
    g = G.parse(DARTS_V2_LITERAL)
    assert g == G.ZOO["darts_v2"]
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)


def test_str_is_a_literal_that_parses_back() -> None:
    g = G.ZOO["sdarts_rs"]
    assert G.parse(str(g)) == g


@pytest.mark.parametrize(
    "text",
    [
        '{"normal": [["sep_conv_3x3", 0]',  # truncated JSON
        '{"normal": [], "normal_concat": [2]}',  # missing keys
        '{"normal": [["sep_conv_3x3"]], "normal_concat": [2], "reduce": [], "reduce_concat": [2]}',  # not pairs
        "Genotype(normal=open('x'), normal_concat=[2], reduce=[], reduce_concat=[2])",  # not a literal
        "Genotype(normal=[('a', 0)]",  # syntax error
        "print('hello')",  # not a Genotype(...) call
        "[1, 2, 3]",
    ],
)
def test_malformed_genotypes_are_user_errors(text: str) -> None:
    with pytest.raises(NasctlError):
        G.parse(text)


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(NasctlError, match="does not exist"):
        G.load(tmp_path / "nope.json")


def test_resolve_zoo_name_file_dir_and_literals(tmp_path: Path) -> None:
    assert G.resolve_genotype("darts_v1", tmp_path) == G.ZOO["darts_v1"]
    path = tmp_path / "g.json"
    path.write_text(G.dumps(G.ZOO["noisy_darts_a"]))
    assert G.resolve_genotype(str(path), tmp_path) == G.ZOO["noisy_darts_a"]
    pasted = tmp_path / "pasted.txt"
    pasted.write_text(DARTS_V2_LITERAL + "\n")
    assert G.resolve_genotype(str(pasted), tmp_path) == G.ZOO["darts_v2"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "genotype.json").write_text(G.dumps(G.ZOO["beta_darts"]))
    assert G.resolve_genotype(str(tmp_path / "run"), tmp_path) == G.ZOO["beta_darts"]
    assert G.resolve_genotype(DARTS_V2_LITERAL, tmp_path) == G.ZOO["darts_v2"]
    assert G.resolve_genotype(G.dumps(G.ZOO["darts_minus"]), tmp_path) == G.ZOO["darts_minus"]
    assert G.resolve_genotype(ARCH, tmp_path) == G.ArchString(ARCH)


def test_resolve_latest_reads_the_latest_search_run(tmp_path: Path) -> None:
    with pytest.raises(NasctlError, match="no search run"):
        G.resolve_genotype("latest", tmp_path)
    for i, name in enumerate(("darts_v1", "sdarts_adv")):
        run = Run.create(tmp_path / "search" / f"run{i}", "search", 0, [], {})
        run.update(started=float(i))
        (run.path / "genotype.json").write_text(G.dumps(G.ZOO[name]))
    assert G.resolve_genotype("latest", tmp_path) == G.ZOO["sdarts_adv"]


def test_unknown_name_lists_the_zoo(tmp_path: Path) -> None:
    with pytest.raises(NasctlError) as err:
        G.resolve_genotype("darts_v3", tmp_path)
    assert all(name in str(err.value) for name in G.ZOO)


def test_skip_count_counts_the_normal_cell_or_the_nb201_cell():
    nb = G.ArchString("|skip_connect~0|+|skip_connect~0|none~1|+|none~0|nor_conv_3x3~1|skip_connect~2|")
    assert nb.ops == ["skip_connect", "skip_connect", "none", "none", "nor_conv_3x3", "skip_connect"]
    assert nb.skip_count() == 3
    assert G.ZOO["darts_v2"].skip_count() == 2  # normal: 5 sep/dil convs + skip_connect from c_{k-2} twice
