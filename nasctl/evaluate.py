"""`nasctl evaluate`: score a retrain run, an untrained genotype, or an NB201 arch string.

A run: test accuracy of its best (or last) checkpoint. Every DARTS-cell network: parameters as
the papers count them (no auxiliary head), FLOPs of one image counted by torch's FlopCounterMode
(multiply-adds = FLOPs / 2, the papers' unit), and the median latency of batch 1 and batch N
after a warm-up. An NB201 arch string: its accuracies in the NAS-Bench-201 table.
"""

from __future__ import annotations

import functools
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table
from torch.utils.flop_counter import FlopCounterMode

from nasctl import genotype as G
from nasctl.benchmarks import table_for
from nasctl.derive import benchmark_table
from nasctl.errors import NasctlError
from nasctl.evalnet import EvalNetwork, build_eval_network, count_params
from nasctl.retrain import check_recipe, test_batches, test_pass
from nasctl.spaces import SPACES
from nasctl.store import Run, atomic_write, resolve_run
from nasctl.train import pick_device
from nasctl.train.trainer import autocast_for, resolve_switches

OUTPUTS = ("table", "json")


def device_and_autocast(cfg: Any) -> tuple[torch.device, Callable[[], Any]]:
    """The device of a trainer config and its autocast (bf16 where its precision, `auto` resolved, says so)."""
    device = pick_device(cfg.device)
    return device, functools.partial(autocast_for, device, resolve_switches(cfg, device).precision)


def count_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2), as torch's FlopCounterMode counts them."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


@torch.inference_mode()
def latency_ms(model: torch.nn.Module, x: torch.Tensor, warmup: int, repeats: int, autocast: Callable[[], Any]) -> float:
    """Median wall time of one forward pass in ms, after `warmup` untimed passes (synchronised on CUDA)."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with autocast():
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


def profile(model: EvalNetwork, dataset: Any, cfg: DictConfig, device: torch.device,
            autocast: Callable[[], Any]) -> dict[str, Any]:
    """Parameters, FLOPs per image and batch-1 / batch-N latency of the network in eval mode."""
    model.eval()
    shape = (dataset.channels, dataset.size, dataset.size)
    x1, xn = (torch.randn(n, *shape, device=device) for n in (1, cfg.batch_size))
    flops = count_flops(model, x1)
    return {
        "params_m": round(count_params(model), 4),
        "flops_m": round(flops / 1e6, 2),
        "madds_m": round(flops / 2e6, 2),
        "latency_ms": {
            "batch_1": latency_ms(model, x1, cfg.latency.warmup, cfg.latency.repeats, autocast),
            "batch_n": latency_ms(model, xn, cfg.latency.warmup, cfg.latency.repeats, autocast),
        },
        "batch_size": cfg.batch_size,
        "device": str(device),
    }


def model_weights(run: Run, checkpoint: str) -> tuple[dict[str, torch.Tensor], int | None]:
    """The network weights of `checkpoint` (best | last | a file) and the (0-based) epoch they are from."""
    if checkpoint in ("best", "last"):
        state = run.load_checkpoint(f"{checkpoint}.pt")
    else:
        path = Path(checkpoint)
        if not path.is_file():
            raise NasctlError(f"checkpoint={checkpoint}: no such file (use best, last or a checkpoint file).")
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001  (pickle, zip and torch errors all mean "not a checkpoint")
            raise NasctlError(f"checkpoint={checkpoint} is not a readable checkpoint ({exc}).") from None
    weights = (state.get("model") or state.get("loop", {}).get("model")) if isinstance(state, dict) else None
    if weights is None:
        raise NasctlError(f"checkpoint={checkpoint} holds no network weights: not a nasctl retrain checkpoint.")
    epoch = state.get("epoch")
    if "loop" in state and state.get("step") == 0:
        epoch -= 1  # the trainer's end-of-epoch checkpoint names the epoch to start next
    return weights, epoch


def evaluate_run(cfg: DictConfig) -> dict[str, Any]:
    """Test accuracy and profile of a retrain run's checkpoint; saved as evaluation.json in the run."""
    run = resolve_run(cfg.run, cfg.paths.run_root, "retrain")
    rcfg, (device, autocast) = run.config, device_and_autocast(cfg.trainer)
    genotype = G.load(run.path / "genotype.json")
    model = build_eval_network(genotype, rcfg.dataset, rcfg.retrain.net, auxiliary=rcfg.retrain.auxiliary_weight > 0)
    weights, epoch = model_weights(run, cfg.checkpoint)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        raise NasctlError(f"checkpoint={cfg.checkpoint} does not fit the network of {run.path}: {exc}") from None
    model.to(device)
    batches = test_batches(rcfg.dataset, device, cfg.batch_size, rcfg.seed, rcfg.retrain.workers)
    result = {
        "run": str(run.path),
        "checkpoint": cfg.checkpoint,
        "epoch": epoch,
        "dataset": rcfg.dataset.name,
        "genotype": genotype.to_dict(),
        **test_pass(model, batches, autocast),
        **profile(model, rcfg.dataset, cfg, device, autocast),
    }
    atomic_write(run.path / "evaluation.json", json.dumps(result, indent=2).encode())
    return result


def evaluate_genotype(cfg: DictConfig, genotype: G.Genotype) -> dict[str, Any]:
    """Profile of the untrained network of a DARTS-cell genotype, or an NB201 arch's benchmark accuracies."""
    kind = type(genotype)
    if cfg.space is not None and SPACES.get(cfg.space.name).genotype is not kind:
        raise NasctlError(
            f"genotype={cfg.genotype} is {kind.what}, but space={cfg.space.name} derives "
            f"{SPACES.get(cfg.space.name).genotype.what}."
        )
    if kind.benchmark is not None:
        bench = table_for(kind, cfg.paths)
        if bench is None:
            raise NasctlError(f"Scoring {kind.what} needs its benchmark table: set "
                              f"paths.{kind.benchmark}=<table.csv> (or $NASCTL_NB201).")
        return {"space": genotype.space, "genotype": str(genotype), "benchmark": bench.accuracies(str(genotype)),
                "table": str(bench.path)}
    check_recipe(cfg.dataset, cfg.retrain.net)
    device, autocast = device_and_autocast(cfg.trainer)
    model = build_eval_network(genotype, cfg.dataset, cfg.retrain.net, auxiliary=False).to(device)
    return {"dataset": cfg.dataset.name, "genotype": genotype.to_dict(),
            **profile(model, cfg.dataset, cfg, device, autocast)}


def result_table(result: dict[str, Any]) -> Table:
    table = Table(title="evaluation", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = {
        "run": result.get("run"),
        "checkpoint": result.get("checkpoint") and f"{result['checkpoint']} (epoch {result.get('epoch')})",
        "dataset": result.get("dataset"),
        "test top-1 (%)": result.get("test_acc"),
        "test top-5 (%)": result.get("test_top5"),
        "test loss": result.get("test_loss"),
        "params (M, no aux head)": result["params_m"],
        "FLOPs / image (M)": result["flops_m"],
        "multiply-adds / image (M)": result["madds_m"],
        "latency batch 1 (ms)": result["latency_ms"]["batch_1"],
        f"latency batch {result['batch_size']} (ms)": result["latency_ms"]["batch_n"],
        "device": result["device"],
    }
    for name, value in rows.items():
        if value is not None:
            table.add_row(name, f"{value:.3f}" if isinstance(value, float) else str(value))
    return table


def run_evaluate(cfg: DictConfig, console: Console | None = None) -> dict[str, Any]:
    """Evaluate `run=` or `genotype=`, print a table (or one JSON object with output=json); returns the result."""
    console = console or Console()
    if cfg.output not in OUTPUTS:
        raise NasctlError(f"output={cfg.output} is not one of {', '.join(OUTPUTS)}.")
    if cfg.run is not None:
        result = evaluate_run(cfg)
    elif cfg.genotype is not None:
        result = evaluate_genotype(cfg, G.resolve_genotype(cfg.genotype, cfg.paths.run_root))
    else:
        raise NasctlError("evaluate needs run=<retrain run dir | latest> or genotype=<zoo name | file | literal>.")
    if cfg.output == "json":
        print(json.dumps(result), flush=True)
    elif "benchmark" in result:
        console.print(benchmark_table(result["benchmark"]))
        console.print(f"{result['genotype']} (looked up in {result['table']})", soft_wrap=True, highlight=False)
    else:
        console.print(result_table(result))
        if "run" in result:
            console.print(f"saved {Path(result['run']) / 'evaluation.json'}", soft_wrap=True, highlight=False)
    return result
