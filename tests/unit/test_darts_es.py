"""DARTS-ES: RobustDARTS's local-average rule on synthetic eigenvalue series (hand-computed epochs), then a real search."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

import nasctl
from nasctl import genotype as G
from nasctl.errors import NasctlError
from nasctl.stabilizers.darts_es import DartsESConfig, EigenvalueTracker
from tests.conftest import TINY_ANY_SPACE
from tests.conftest import nasctl as nasctl_cli

RD = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DartsESConfig),
                                         OmegaConf.load(nasctl.conf_dir() / "stabilizer" / "darts_es.yaml")))


def epoch_genotype(epoch: int) -> G.ArchString:
    """A genotype that names its epoch, to check which one the rule keeps."""
    return G.ArchString(f"|skip_connect~0|+|none~0|none~1|+|none~0|none~1|avg_pool_3x3~{epoch}|")


def run_series(evs: list[float], cfg: DartsESConfig = RD):
    """Feed eigenvalues at epochs 0, ev_every, 2 ev_every, ...; the first EarlyStop (or None)."""
    tracker = EigenvalueTracker(cfg)
    for i, ev in enumerate(evs):
        epoch = i * cfg.ev_every
        stop = tracker.update(epoch, ev, epoch_genotype(epoch))
        if stop is not None:
            return stop
    return None


def test_defaults_are_robustdarts_scripts() -> None:
    assert (RD.ev_every, RD.window, RD.factor, RD.delta, RD.start_epoch) == (2, 5, 1.3, 4, 10)


def test_local_average_is_centred_with_a_one_sided_start() -> None:
    tracker = EigenvalueTracker(RD)
    for i, ev in enumerate([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]):
        tracker.update(2 * i, ev, epoch_genotype(2 * i))
    # RD: mean(ev[0:3]), mean(ev[0:4]), then the sliding window of 5
    assert tracker.local_averages() == pytest.approx([2.0, 2.5, 3.0, 4.0])


def test_flat_series_never_stops() -> None:
    assert run_series([1.0] * 25) is None


def test_step_stops_when_the_windowed_ratio_first_exceeds_the_factor() -> None:
    # eigenvalue 1 up to epoch 30, then 2. At epoch 32 LA(28) = (4*1 + 2)/5 = 1.2 <= 1.3: no stop. At epoch 34
    # LA(30) = (3*1 + 2*2)/5 = 1.4 > 1.3 * LA(22) = 1.3: stop, keeping epoch 30 - 2*4 = 22 (t - 12).
    stop = run_series([1.0] * 16 + [2.0] * 10)
    assert stop is not None
    assert (stop.details["triggered_epoch"], stop.epoch) == (34, 22)
    assert stop.genotype == epoch_genotype(22)
    assert stop.details["ratio"] == pytest.approx(1.4)


def test_no_stop_before_the_kept_epoch_reaches_start_epoch() -> None:
    # a jump at epoch 10: the ratio is large from epoch 18 on, but the first allowed check is epoch 22
    # (kept epoch 22 - 12 = 10): LA(18) = 10, LA(10) = (2*1 + 3*10)/5 = 6.4, ratio 1.5625.
    stop = run_series([1.0] * 5 + [10.0] * 20)
    assert (stop.details["triggered_epoch"], stop.epoch) == (22, 10)
    assert stop.details["ratio"] == pytest.approx(10 / 6.4)
    assert "DARTS-ES" in stop.reason and "epoch 10" in stop.reason


def test_the_tracker_state_round_trips() -> None:
    a, b = EigenvalueTracker(RD), EigenvalueTracker(RD)
    evs = [1.0] * 16 + [2.0] * 10
    for i, ev in enumerate(evs[:10]):
        a.update(2 * i, ev, epoch_genotype(2 * i))
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    stops = [b.update(2 * i, ev, epoch_genotype(2 * i)) for i, ev in enumerate(evs[10:], start=10)]
    assert next(s for s in stops if s is not None).epoch == 22


@pytest.mark.parametrize("bad", [{"window": 4}, {"ev_every": 0}, {"delta": 0}, {"factor": 0.0}])
def test_bad_settings_are_refused(bad: dict) -> None:
    with pytest.raises(NasctlError, match="darts_es needs"):
        DartsESConfig(**{**vars(RD), **bad})


@pytest.mark.slow
def test_a_real_search_stops_and_keeps_the_named_epoch(tmp_path, fashion) -> None:
    # every epoch's eigenvalue, one-value averages, any growth stops: the rule fires after epoch 1 and keeps epoch 0
    es = ["stabilizer=darts_es", "stabilizer.darts_es.ev_every=1", "stabilizer.darts_es.window=1",
        "stabilizer.darts_es.delta=1", "stabilizer.darts_es.start_epoch=0", "stabilizer.darts_es.factor=1e-9"]
    tiny = TINY_ANY_SPACE + ["space=nb201", "space.N=1", "paths.nb201=null"]
    out = nasctl_cli("search", *tiny, "search.epochs=4", *es, "hydra.run.dir=es", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "es"
    manifest = json.loads((run / "manifest.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert manifest["status"] == "completed"
    assert manifest["early_stop"] == {"rule": "darts_es", "triggered_epoch": 1, "genotype_epoch": 0,
                                      "ratio": pytest.approx(metrics[1]["hessian_eig"] / metrics[0]["hessian_eig"])}
    assert "DARTS-ES" in manifest["reason"]
    assert [m["epoch"] for m in metrics] == [0, 1]  # ended cleanly after epoch 1 of 4
    kept = G.load(run / "genotype.json")
    assert str(kept) == metrics[0]["genotype"] and G.from_dict(manifest["genotype"]) == kept
    derived = nasctl_cli("derive", "run=es", "paths.nb201=null", cwd=tmp_path)  # argmax at the kept epoch, not the last
    assert derived.returncode == 0 and "(epoch 0)" in derived.stdout and G.load(run / "genotype.json") == kept
    report = nasctl_cli("report", "dir=es", "plots=false", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "DARTS-ES" in (run / "report" / "report.md").read_text()
    # killed after the stop, before the manifest said so: the resume ends at once with the same result
    manifest.update(status="running")
    manifest.pop("early_stop"), manifest.pop("reason"), manifest.pop("genotype")
    (run / "manifest.json").write_text(json.dumps(manifest))
    again = nasctl_cli("search", "resume=es", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((run / "manifest.json").read_text())
    assert resumed["status"] == "completed" and resumed["early_stop"]["genotype_epoch"] == 0
    assert (run / "metrics.jsonl").read_text().count("\n") == 2 and G.load(run / "genotype.json") == kept
