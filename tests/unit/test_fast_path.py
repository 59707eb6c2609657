"""The trainer's speed switches: `auto` resolution, and the same search result with and without them."""

from __future__ import annotations

import contextlib
import copy
import functools
import json

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import nasctl
import nasctl.entry  # registers the schemas and resolvers of the stage configs
from nasctl.errors import NasctlError
from nasctl.search.architect import Architect
from nasctl.search.stage import SearchLoop, run_search
from nasctl.stabilizers import Batches, Stabilizers
from nasctl.store import Run
from nasctl.train import Trainer, seed_everything
from nasctl.train.trainer import SWITCHES, full_fp32, resolve_switches, set_tf32
from tests.conftest import TINY_SEARCH, search_steps, supernet
from tests.conftest import nasctl as nasctl_cli

CONF = nasctl.conf_dir()
EAGER = [
    "trainer.precision=fp32", "trainer.tf32=false", "trainer.channels_last=false", "trainer.compile=false",
    "trainer.cuda_graphs=false", "trainer.fused_optimizer=false",
]
CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # resolving needs only the device type, not a GPU


def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("search", overrides=list(overrides))


# -- trainer=auto -----------------------------------------------------------------------------
def test_auto_takes_each_switch_from_the_device_table():
    cfg = composed("trainer=auto").trainer
    for device in (CPU, CUDA):
        resolved = resolve_switches(cfg, device)
        assert {k: resolved[k] for k in SWITCHES} == dict(cfg.auto[device.type])
    assert cfg.precision == "auto"  # the caller's config is left as it was


def test_auto_on_cuda_is_the_safe_set_until_a_gpu_was_measured():
    """fp32 + TF32, NHWC, fused optimizers; no bf16, no compile, no CUDA graphs (docs/performance.md)."""
    table = composed("trainer=auto").trainer.auto
    assert table.cuda.precision == "fp32" and table.cuda.tf32 and table.cuda.channels_last and table.cuda.fused_optimizer
    assert not table.cuda.compile and not table.cuda.cuda_graphs and not table.cpu.tf32
    assert table.cpu.precision == "fp32" and table.cpu.channels_last and not table.cpu.compile and not table.cpu.cuda_graphs


def test_a_switch_set_by_hand_beats_auto():
    cfg = composed("trainer=auto", "trainer.channels_last=false", "trainer.precision=bf16").trainer
    resolved = resolve_switches(cfg, CUDA)
    assert resolved.channels_last is False and resolved.precision == "bf16" and resolved.tf32 is True


@pytest.mark.parametrize("preset, device", [("cpu", CPU), ("gpu", CUDA)])
def test_cpu_and_gpu_presets_are_auto_on_a_fixed_device(preset, device):
    cfg = composed(f"trainer={preset}").trainer
    assert cfg.device == device.type
    resolved = resolve_switches(cfg, device)
    assert {k: resolved[k] for k in SWITCHES} == dict(cfg.auto[device.type])


def test_trainer_resolves_auto_for_the_device_it_picked(tmp_path):
    trainer = Trainer(composed("trainer=cpu").trainer, Run(tmp_path))
    assert trainer.device == CPU
    assert {k: trainer.cfg[k] for k in SWITCHES} == dict(trainer.cfg.auto.cpu)
    assert trainer.optimizer_kwargs() == ({"fused": True} if trainer.cfg.fused_optimizer else {})


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.compile=maybe"], "trainer.compile=maybe"),
        (["trainer.precision=fp16"], "trainer.precision=fp16"),
        (["trainer.compile=true", "trainer.cuda_graphs=true"], "cuda_graphs=true needs"),
        (["trainer.tf32=true"], "tf32=true needs a CUDA device"),
    ],
)
def test_bad_switches_are_refused_with_a_message(overrides, message):
    with pytest.raises(NasctlError, match=message):
        resolve_switches(composed("trainer=cpu", *overrides).trainer, CPU)


def test_cuda_graphs_need_compile():
    cfg = composed("trainer=gpu", "trainer.compile=false", "trainer.cuda_graphs=true").trainer
    with pytest.raises(NasctlError, match="needs trainer.compile=true"):
        resolve_switches(cfg, CUDA)


# -- the same search with and without the switches ---------------------------------------------
def search_alphas(tmp_path, name: str, *overrides: str) -> np.ndarray:
    """Final alphas (all cell types, flat) of a real one-epoch tiny search of 4 steps, eager fp32 + `overrides`."""
    cfg = composed(*TINY_SEARCH, "search.epochs=1", "search.steps_per_epoch=4", *EAGER, *overrides)
    run = run_search(cfg, tmp_path / name, [])
    with np.load(run.path / "alphas.npz") as f:
        return np.concatenate([f[k][-1].ravel() for k in sorted(f.files)])


def update_gap(fast: np.ndarray, eager: np.ndarray) -> float:
    """||fast update - eager update|| / ||eager update|| of the alphas, from their common start."""
    cfg = composed(*TINY_SEARCH)
    torch.manual_seed(cfg.seed)
    model = supernet(cfg.space, cfg.dataset.num_classes, cfg.dataset.channels)
    start = np.concatenate([model.alphas[k].detach().numpy().ravel() for k in sorted(model.alphas)])
    assert np.abs(eager - start).max() > 1e-4  # the search moved them
    return float(np.linalg.norm(fast - eager) / np.linalg.norm(eager - start))


# Adam moves every alpha by about lr per step in the sign of its gradient, so a gradient near zero
# turns rounding differences into visible ones. Second order is looser still: its finite-difference
# Hessian term divides a difference of two gradients by 2r (r = 0.01/||v||), which amplifies fp32
# rounding about 1e4 times (in float64 the NHWC and NCHW hypergradients agree to 1e-14, see below).
@pytest.mark.slow
@pytest.mark.parametrize("order, tolerance", [("first", 0.02), ("second", 0.25)])
def test_channels_last_and_fused_optimizers_give_the_eager_alphas(order, tolerance, fashion, tmp_path):
    eager = search_alphas(tmp_path, "eager", f"search.order={order}")
    fused = search_alphas(tmp_path, "fused", f"search.order={order}", "trainer.fused_optimizer=true")
    nhwc = search_alphas(tmp_path, "nhwc", f"search.order={order}", "trainer.channels_last=true")
    assert update_gap(fused, eager) < 1e-5
    assert update_gap(nhwc, eager) < tolerance


@pytest.mark.slow
def test_bf16_autocast_gives_the_fp32_alphas_within_bf16_tolerance(fashion, tmp_path):
    fp32 = search_alphas(tmp_path, "fp32")
    bf16 = search_alphas(tmp_path, "bf16", "trainer.precision=bf16")
    assert update_gap(bf16, fp32) < 0.25  # measured 0.10


def test_second_order_hypergradient_is_the_same_in_nhwc_in_float64():
    torch.manual_seed(0)
    base = supernet(composed(*TINY_SEARCH).space, 10, 1).double()
    x1, x2 = torch.randn(2, 8, 1, 16, 16, dtype=torch.float64)
    y1, y2 = torch.randint(0, 10, (2, 8))
    grads = []
    for fmt in (torch.contiguous_format, torch.channels_last):
        model = copy.deepcopy(base).to(memory_format=fmt)
        w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        arch = Architect(model, w_opt, "second", Stabilizers({}), 3e-4, (0.5, 0.999), 1e-3, contextlib.nullcontext)
        grads.append(torch.cat([g.flatten() for g in arch.second_order(Batches(x1, y1, x2, y2), 0.025)]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-10, atol=1e-14)


def test_second_order_finite_difference_runs_in_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    cfg = composed(*TINY_SEARCH).space
    model = supernet(cfg, 10, 1)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    weights = model.weight_parameters()
    v = [1e-2 * torch.randn_like(w) for w in weights]
    w_opt = torch.optim.SGD(weights, lr=0.1)

    def hvp(autocast) -> torch.Tensor:
        arch = Architect(model, w_opt, "second", Stabilizers({}), 3e-4, (0.5, 0.999), 1e-3, autocast)
        return torch.cat([h.flatten() for h in arch._mixed_hvp(Batches(x, y, x, y), weights, v)])

    fp32 = hvp(contextlib.nullcontext)
    bf16 = hvp(lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    assert fp32.abs().max() > 0
    torch.testing.assert_close(bf16, fp32, rtol=0, atol=0)  # steps r*v vanish in bf16 weights


def test_full_fp32_turns_tf32_and_autocast_off_inside_and_restores_them():
    before = set_tf32(True)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with full_fp32():
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_switches_reach_the_model_and_the_optimizers(fashion, tmp_path):
    cfg = composed(*TINY_SEARCH, *EAGER, "trainer.fused_optimizer=true", "trainer.channels_last=true")
    trainer = Trainer(cfg.trainer, Run(tmp_path))
    loop = SearchLoop(cfg, trainer, Run(tmp_path))
    assert loop.w_opt.defaults["fused"] and loop.architect.opt.defaults["fused"]
    x, _ = next(loop.train_batches.epoch(0))
    features = loop.model.stem(x)  # NCHW input; the NHWC weights make every activation NHWC from here on
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()


# -- torch.compile -------------------------------------------------------------------------------
# One cell with one node and four candidate ops: inductor builds one C++ kernel per fused group
# with the system compiler (seconds each on a CPU), so anything bigger takes minutes to compile.
ONE_NODE = ["space.layers=1", "space.steps=1", "space.multiplier=1", "space.ops=[none,skip_connect,sep_conv_3x3,max_pool_3x3]"]


def two_steps(tmp_path, *overrides: str) -> tuple[np.ndarray, SearchLoop]:
    """Alphas after two search steps of the TINY supernet, eager fp32 + `overrides`, and the loop."""
    cfg = composed(*TINY_SEARCH, *EAGER, *overrides)
    seed_everything(cfg.seed)
    loop = search_steps(cfg, tmp_path)
    return np.concatenate([a.detach().numpy().ravel() for a in loop.model.alphas.values()]), loop


def stepped_alphas(tmp_path, *overrides: str) -> np.ndarray:
    """Alphas after two search steps of the one-node supernet."""
    return two_steps(tmp_path, *ONE_NODE, *overrides)[0]


@pytest.fixture
def fresh_dynamo():
    """No compiled code or cache limits left over from other tests; counts this test's graphs."""
    torch._dynamo.reset()
    yield torch._dynamo.utils.counters["stats"]
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["search.order=second", "stabilizer=sdarts_adv"], ["stabilizer=amended"]])
def test_compile_captures_every_path_of_the_search_step(extra, fashion, tmp_path, monkeypatch, fresh_dynamo):
    """Graph capture (dynamo + AOTAutograd) of functional_call, mixing_override, eval mode, and the
    eager fallback for double gradients (Amended), with the aot_eager backend: the same capture as
    inductor's without its C++ build, which the next test covers."""
    eager = stepped_alphas(tmp_path, *extra)
    aot_eager = functools.partialmethod(torch.nn.Module.compile, backend="aot_eager")
    monkeypatch.setattr(torch.nn.Module, "compile", aot_eager)
    compiled = stepped_alphas(tmp_path, *extra, "trainer.compile=true")
    assert fresh_dynamo["unique_graphs"] >= 2  # the compiled forward ran (train and eval / functional)
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-7)


@pytest.mark.slow
# Second order divides a difference of two gradients by 2r, so the compiled graphs' own rounding of the
# fused batch norm (decomposed by AOTAutograd) reaches the alphas at a few 1e-6 (seen: 5.3e-6).
@pytest.mark.parametrize("extra, shared, atol", [([], True, 1e-6), (["search.order=second", "stabilizer=sdarts_adv"], False, 2e-5)])
def test_regional_compile_shares_graphs_between_mixed_edges_and_gives_the_eager_alphas(
    extra, shared, atol, fashion, tmp_path, monkeypatch, fresh_dynamo
):
    """compile=regional compiles each mixed edge (aot_eager: inductor's capture without its C++ build):
    the first-order step's 28 edges of two widths and two strides share graphs (4 when run alone; a few
    more after a whole-model compile earlier in the process, which dynamo's reset does not fully undo);
    second order with SDARTS-ADV (substituted weights, overridden mixing, no-grad passes) gives the eager
    alphas too."""
    eager, _ = two_steps(tmp_path, *extra)
    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(torch.nn.Module.compile, backend="aot_eager"))
    regional, loop = two_steps(tmp_path, *extra, "trainer.compile=regional")
    assert np.isfinite(loop.evaluate()["val_loss"])  # eval mode runs through the compiled edges too
    edges = len(list(loop.model.mixed_ops()))
    assert edges == 28 and 1 <= fresh_dynamo["unique_graphs"] < (edges if shared else 2 * edges)
    assert all(m._compiled_call_impl is not None for m in loop.model.mixed_ops())
    assert getattr(loop.model, "_compiled_call_impl", None) is None  # the supernet itself stays eager
    np.testing.assert_allclose(regional, eager, rtol=0, atol=atol)


@pytest.mark.slow
def test_regional_compile_of_the_eval_network_compiles_each_cell(tmp_path, monkeypatch, fresh_dynamo):
    from nasctl import genotype as G
    from nasctl.evalnet import EvalNetwork

    torch.manual_seed(0)
    net = EvalNetwork(G.ZOO["darts_v2"], C=4, layers=20, stem="cifar", num_classes=10, in_channels=3, size=16,
                      auxiliary=False).eval()
    x = torch.randn(2, 3, 16, 16)
    eager = net(x)[0]
    monkeypatch.setattr(torch.nn.Module, "compile", functools.partialmethod(torch.nn.Module.compile, backend="aot_eager"))
    trainer = Trainer(composed("trainer=cpu", *EAGER, "trainer.compile=regional").trainer, Run(tmp_path))
    net = trainer.prepare(net)
    torch.testing.assert_close(net(x)[0], eager, rtol=0, atol=1e-6)
    assert all(c._compiled_call_impl is not None for c in net.cells) and fresh_dynamo["unique_graphs"] >= 1


@pytest.mark.slow
def test_inductor_compiled_search_steps_give_the_eager_alphas(fashion, tmp_path, fresh_dynamo):
    eager = stepped_alphas(tmp_path)
    compiled = stepped_alphas(tmp_path, "trainer.compile=true")
    assert fresh_dynamo["unique_graphs"] >= 1
    np.testing.assert_allclose(compiled, eager, rtol=0, atol=1e-6)


# -- the benchmark ------------------------------------------------------------------------------
@pytest.mark.slow
def test_bench_times_each_variant_against_eager_and_writes_json(fashion, tmp_path):
    tiny = ["experiment=quickstart", "dataset.subset=256", "dataset.test_subset=64"]
    search = [*tiny, "space.C=4", "space.layers=2", "search.batch_size=16"]
    retrain = [*tiny, "genotype=darts_v2", "retrain.batch_size=16", "retrain.net.C=4", "retrain.net.layers=2"]
    result = nasctl_cli(
        "bench", "device=cpu", "threads=1", "warmup=1", "steps=1", "rounds=2", "output=out.json",
        f"search={json.dumps(search)}", f"retrain={json.dumps(retrain)}",
        "skip=[second,sdarts_adv,pc_darts,gdas,drnas,fused_optimizer,tf32,bf16,compile,regional]", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["torch"] == torch.__version__ and report["device"] == "cpu" and report["device_name"]
    rows = {(r["case"], r["variant"]): r for r in report["results"]}
    assert set(rows) == {(c, v) for c in ("first", "retrain") for v in ("eager", "channels_last", "cuda_graphs", "auto")}
    for case, unit in (("first", "steps/s"), ("retrain", "img/s")):
        assert rows[case, "eager"]["ratio"] == 1.0 and rows[case, "eager"]["unit"] == unit
        assert rows[case, "channels_last"]["switches"]["channels_last"] is True
        assert rows[case, "channels_last"]["rate"] > 0 and rows[case, "channels_last"]["ratio"] > 0
        assert rows[case, "cuda_graphs"]["rate"] is None and "CUDA" in rows[case, "cuda_graphs"]["note"]
    assert "eager" in result.stdout and "channels_last" in result.stdout  # the table
