"""`nasctl search` + `nasctl derive` end to end in the NAS-Bench-201 and RobustDARTS S3 spaces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasctl import genotype as G
from nasctl.benchmarks import load_table
from tests.conftest import TINY_ANY_SPACE, nasctl

pytestmark = pytest.mark.slow



def only_run(root: Path) -> Path:
    (manifest,) = root.glob("runs/search/*/manifest.json")
    return manifest.parent


def test_nb201_search_logs_and_derive_prints_benchmark_accuracy(tmp_path, fashion, nb201_table):
    search = nasctl("search", "space=nb201", "space.N=1", *TINY_ANY_SPACE, cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    run = only_run(tmp_path)
    table = load_table(nb201_table)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for r in records:  # each epoch: the argmax arch and its benchmark accuracies
        assert r["genotype"] in table.rows
        assert {f"bench_{k}": v for k, v in table.accuracies(r["genotype"]).items()} == {
            k: r[k] for k in ("bench_cifar10", "bench_cifar100", "bench_imagenet16_120")}

    derive = nasctl("derive", "run=latest", cwd=tmp_path)
    assert derive.returncode == 0, derive.stderr
    genotype = json.loads((run / "genotype.json").read_text())
    assert set(genotype) == {"space", "arch"} and genotype["space"] == "nb201"  # no accuracies in the genotype
    arch = genotype["arch"]
    assert arch == records[-1]["genotype"] and arch in derive.stdout
    assert isinstance(G.parse(arch), G.ArchString)
    for acc in table.accuracies(arch).values():
        assert f"{acc:.2f}" in derive.stdout
    assert "cifar10" in derive.stdout and "imagenet16_120" in derive.stdout

    unset = nasctl("derive", "run=latest", "paths.nb201=null", cwd=tmp_path)
    assert unset.returncode == 0 and "paths.nb201=" in unset.stdout and "NASCTL_NB201" in unset.stdout


def test_s3_search_derives_a_darts_cell(tmp_path, fashion):
    search = nasctl("search", "space=s3", "space.layers=3", "search.drop_path=0.2", *TINY_ANY_SPACE, "search.epochs=1", cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    derive = nasctl("derive", "run=latest", cwd=tmp_path)
    assert derive.returncode == 0, derive.stderr
    g = G.load(only_run(tmp_path) / "genotype.json")
    assert isinstance(g, G.CellGenotype) and g.space == "s3"
    assert len(g.normal) == len(g.reduce) == 8
    assert {op for op, _ in g.normal + g.reduce} <= {"skip_connect", "sep_conv_3x3"}  # never `none`
    assert str(g) in derive.stdout.replace("\n", "")
