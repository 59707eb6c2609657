"""`nasctl report`: tables and figures over a real (tiny) NB201 sweep; table and cell-layout helpers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from nasctl import genotype as G
from nasctl.report import cells
from nasctl.report.table import paired, summary
from tests.conftest import FASHION, nasctl, require_nb201_table

ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NB201_SWEEP = [
    "space=nb201", "space.C=4", "space.N=1", "dataset=fashion_mnist", "dataset.subset=256", "trainer=cpu",
    "trainer.progress=false", "search.epochs=2", "search.batch_size=16", "search.steps_per_epoch=2",
    "search.eval_batches=1", "diagnostics.hessian_every=1", "stabilizer=none,sdarts_rs",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-job NB201 sweep (none, sdarts_rs) in the default runs/ layout of a fresh directory."""
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed")
    require_nb201_table()
    cwd = tmp_path_factory.mktemp("report")
    out = nasctl("search", "-m", *NB201_SWEEP, cwd=cwd, env=ONE_THREAD)
    assert out.returncode == 0, out.stderr
    return cwd


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_report_latest_sweep_tables_and_figures(sweep: Path) -> None:
    out = nasctl("report", cwd=sweep, env={**ONE_THREAD, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr
    (sweep_dir,) = (sweep / "runs/search/multirun").iterdir()  # latest = the newest run's whole sweep
    report = sweep_dir / "report"
    rows = {r["method"]: r for r in read_csv(report / "report.csv")}
    assert set(rows) == {"none", "sdarts_rs"}
    for row in rows.values():  # each cell is the run's last logged value
        last = json.loads(Path(row["path"], "metrics.jsonl").read_text().splitlines()[-1])
        for key in ("val_acc", "hessian_eig", "bench_cifar10", "bench_cifar100", "bench_imagenet16_120"):
            assert float(row[key]) == pytest.approx(last[key])
        assert row["full_genotype"] == last["genotype"]
        assert row["genotype"].count(";") == 2  # NB201: three nodes
    means = {r["method"]: r for r in read_csv(report / "summary.csv")}
    assert means["none"]["runs"] == "1" and float(means["none"]["val_acc_mean"]) == float(rows["none"]["val_acc"])
    assert "NB201 C10" in out.stdout and "sdarts_rs" in out.stdout
    (pair,) = read_csv(report / "paired.csv")  # baseline=none: sdarts_rs minus none, same seed
    assert pair["method"] == "sdarts_rs" and pair["seed"] == rows["none"]["seed"]
    for key in ("val_acc", "hessian_eig", "bench_cifar10"):
        assert float(pair[key]) == pytest.approx(float(rows["sdarts_rs"][key]) - float(rows["none"][key]))
    md = (report / "report.md").read_text()
    assert "## Paired with none" in md and "Δ val acc" in md
    figures = [line[line.index("(") + 1:-1] for line in md.splitlines() if line.startswith("![")]
    expected = {"curves/hessian_eig.png", "curves/bench_cifar10.png", "curves/val_acc.png"}
    assert expected <= set(figures)
    assert sum(f.startswith("alphas/") for f in figures) == 2 and sum(f.startswith("cells/") for f in figures) == 2
    for f in figures:
        assert (report / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_positional_run_dir_and_out(sweep: Path) -> None:
    (run,) = sweep.glob("runs/search/multirun/*/1")
    out = nasctl("report", str(run), "plots=false", "out=single", cwd=sweep, env=ONE_THREAD)
    assert out.returncode == 0, out.stderr
    (row,) = read_csv(sweep / "single/report.csv")
    assert row["method"] == "sdarts_rs" and Path(row["path"]) == run.resolve()
    assert not (sweep / "single/curves").exists()


@pytest.mark.slow
def test_short_genotypes() -> None:
    nb = G.ArchString("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|skip_connect~1|nor_conv_1x1~2|")
    assert nb.short() == "c3; skip -; avg skip c1"
    cell = G.CellGenotype(normal=(("sep_conv_3x3", 0), ("skip_connect", 1)) * 4, normal_concat=(2, 3, 4, 5),
                          reduce=(("max_pool_3x3", 0),) * 8, reduce_concat=(2, 3, 4, 5))
    assert cell.short() == "; ".join(["sep3:0 skip:1"] * 4)


def test_summary_mean_and_sample_std_per_method() -> None:
    rows = [{"method": m, "space": "nb201", "dataset": "fashion_mnist", "val_acc": v, "skip_count": None,
             "hessian_eig": None, "bench_cifar10": None, "bench_cifar100": None, "bench_imagenet16_120": None,
             "time": 1.0} for m, v in (("none", 80.0), ("none", 90.0), ("beta_decay", 70.0))]
    by = {r["method"]: r for r in summary(rows)}
    assert by["none"]["runs"] == 2 and by["none"]["val_acc"] == pytest.approx((85.0, 50.0 ** 0.5))
    assert by["beta_decay"]["val_acc"] == (70.0, None) and by["none"]["skip_count"] is None


def test_paired_differences_match_seeds_and_skip_unfinished_runs() -> None:
    def row(method: str, seed: int, acc: float, eig: float | None, status: str | None = None) -> dict:
        return {"method": method, "seed": seed, "space": "nb201", "dataset": "fashion_mnist", "status": status,
                "val_acc": acc, "skip_count": 0, "hessian_eig": eig, "bench_cifar10": None, "bench_cifar100": None,
                "bench_imagenet16_120": None, "time": 9.0}
    runs = [row("none", 0, 70.0, 1.0), row("none", 1, 80.0, 3.0), row("none", 2, 60.0, 1.0),
            row("beta_decay", 1, 75.0, 1.0), row("beta_decay", 0, 74.0, None),  # listed out of seed order
            row("beta_decay", 2, 99.0, 0.0, status="running"),  # an unfinished run pairs with nothing
            row("noisy", 3, 50.0, 1.0)]  # no baseline run of seed 3
    deltas = {(d["method"], d["seed"]): d for d in paired(runs, "none")}
    assert set(deltas) == {("beta_decay", 0), ("beta_decay", 1)}
    assert deltas["beta_decay", 0]["val_acc"] == 4.0 and deltas["beta_decay", 0]["hessian_eig"] is None
    assert deltas["beta_decay", 1]["val_acc"] == -5.0 and deltas["beta_decay", 1]["hessian_eig"] == -2.0
    (by,) = summary(list(deltas.values()))
    assert by["runs"] == 2 and by["val_acc"] == pytest.approx((-0.5, 4.5 * 2 ** 0.5))
    assert by["hessian_eig"] == (-2.0, None) and by["time"] is None


def test_cell_layout_columns_follow_longest_paths(tmp_path: Path) -> None:
    g = G.CellGenotype(  # node 0 <- inputs; node 1 <- node 0; node 2 <- node 1; node 3 <- inputs
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("skip_connect", 2), ("sep_conv_3x3", 0),
                ("dil_conv_3x3", 3), ("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1)),
        normal_concat=(2, 3, 4, 5), reduce=(("max_pool_3x3", 0),) * 8, reduce_concat=(2, 3, 4, 5))
    nodes, edges = g.graphs()["normal"]
    assert ("1", "2", "dil_conv_3x3") in edges and sum(b == "$c_{k}$" for _, b, _ in edges) == 4
    column = {n: x / cells.DX for n, (x, _) in cells.layout(nodes, edges).items()}
    assert column == {"$c_{k-2}$": 0, "$c_{k-1}$": 0, "0": 1, "1": 2, "2": 3, "3": 1, "$c_{k}$": 4}
    png = cells.draw(g, tmp_path / "cell.png", "test")
    assert png.read_bytes()[:4] == b"\x89PNG"
