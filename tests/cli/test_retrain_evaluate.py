"""retrain and evaluate end to end: search -> derive -> retrain -> evaluate on Fashion-MNIST, zoo and NB201 scoring."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nasctl import genotype as G
from tests.cli.test_resume import checkpoint_sums, wait_for
from tests.conftest import TINY_RETRAIN, TINY_SEARCH, nasctl

pytestmark = pytest.mark.slow

FAST_PROFILE = ["latency.warmup=1", "latency.repeats=2", "batch_size=8", "trainer=cpu"]
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"


def only_run(root: Path, kind: str) -> Path:
    (manifest,) = root.glob(f"runs/{kind}/**/manifest.json")
    return manifest.parent


def test_search_derive_retrain_evaluate(tmp_path, fashion):
    for args in (["search", *TINY_SEARCH], ["derive", "run=latest"], ["retrain", *TINY_RETRAIN, "genotype=latest"]):
        out = nasctl(*args, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    search, retrain = only_run(tmp_path, "search"), only_run(tmp_path, "retrain")
    manifest = json.loads((retrain / "manifest.json").read_text())
    searched = G.load(search / "genotype.json")
    assert manifest["kind"] == "retrain" and manifest["status"] == "completed"
    assert G.from_dict(manifest["genotype"]) == searched == G.load(retrain / "genotype.json")
    assert 0 < manifest["params_m"] < 0.1 and {"best.pt", "last.pt"} <= set(manifest["checkpoints"])
    metrics = [json.loads(line) for line in (retrain / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [0, 1]
    assert [m["drop_path"] for m in metrics] == [0.0, 0.1]  # 0.2 * epoch / epochs
    assert metrics[1]["lr"] < metrics[0]["lr"] == 0.025

    out = nasctl("evaluate", "run=latest", *FAST_PROFILE, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "test top-1" in out.stdout and "params" in out.stdout
    saved = json.loads((retrain / "evaluation.json").read_text())
    assert saved["checkpoint"] == "best" and saved["dataset"] == "fashion_mnist"
    one_image = 100 / 64  # evaluate's batches differ from retrain's: allow a near tie to flip
    assert saved["test_acc"] == pytest.approx(max(m["test_acc"] for m in metrics), abs=one_image)  # best.pt
    assert saved["params_m"] == manifest["params_m"] and saved["flops_m"] > 0
    assert saved["madds_m"] == pytest.approx(saved["flops_m"] / 2, abs=0.01)
    assert set(saved["latency_ms"]) == {"batch_1", "batch_n"} and saved["batch_size"] == 8

    last = nasctl("evaluate", f"run={retrain}", "checkpoint=last", "output=json", *FAST_PROFILE, cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    result = json.loads(last.stdout)
    assert result["epoch"] == 1 and result["test_acc"] == pytest.approx(metrics[1]["test_acc"], abs=one_image)
    path = nasctl("evaluate", f"run={retrain}", f"checkpoint={retrain / 'checkpoints' / 'best.pt'}", "output=json",
                  *FAST_PROFILE, cwd=tmp_path)
    assert path.returncode == 0, path.stderr
    assert json.loads(path.stdout)["test_acc"] == saved["test_acc"]

    again = nasctl("retrain", *TINY_RETRAIN, f"resume={retrain}", cwd=tmp_path)
    assert again.returncode == 2 and "completed retrain" in again.stderr


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, fashion):
    args = [*TINY_RETRAIN, "genotype=darts_v2", "retrain.epochs=3", "retrain.steps_per_epoch=4",
            "trainer.checkpoint_every_steps=1"]
    ref = nasctl("retrain", *args, "hydra.run.dir=ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nasctl", "retrain", *args, "hydra.run.dir=killed"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (killed / "metrics.jsonl").exists(), proc)  # epoch 0 done
    after_epoch = checkpoint_sums(killed).get("last.pt")
    wait_for(lambda: checkpoint_sums(killed).get("last.pt") not in (None, after_epoch), proc)  # mid epoch 1
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    resumed = nasctl("retrain", *args, "resume=killed", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("last.pt", "best.pt"):
        a, b = (torch.load(tmp_path / run / "checkpoints" / name, weights_only=False) for run in ("ref", "killed"))
        a, b = a.get("model") or a["loop"]["model"], b.get("model") or b["loop"]["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    metrics = [(tmp_path / run / "metrics.jsonl").read_text() for run in ("ref", "killed")]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "epoch_time"} for line in m.splitlines()] for m in metrics]
    assert strip[0] == strip[1] and [r["epoch"] for r in strip[1]] == [0, 1, 2]


def test_evaluate_zoo_genotype_without_any_dataset_files(tmp_path):
    out = nasctl("evaluate", "genotype=darts_v2", "dataset=cifar10", "output=json", *FAST_PROFILE,
                 cwd=tmp_path, env={"NASCTL_DATA": str(tmp_path / "no-data")})
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)  # stdout holds the JSON object and nothing else
    assert result["params_m"] == pytest.approx(3.3, abs=0.05)
    assert result["madds_m"] == pytest.approx(528, rel=0.02)  # the ~528M multiply-adds usually quoted for DARTS V2
    assert result["dataset"] == "cifar10" and "test_acc" not in result


def test_evaluate_nb201_arch_string_looks_up_the_benchmark(tmp_path, nb201_table):
    out = nasctl("evaluate", "space=nb201", f"genotype='{ALL_SKIP}'", "output=json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["benchmark"] == pytest.approx({"cifar10": 54.30, "cifar100": 15.61, "imagenet16_120": 16.32}, abs=0.01)
    assert Path(result["table"]).resolve() == nb201_table.resolve()  # ../shared may be a symbolic link


