"""`make gpu-check`: one command for a first, perhaps brief and offline, GPU session.

It installs what the machine lacks of nasctl's Hydra stack from the wheels `make gpu-wheels` put in
`.gpu-wheels/`, runs `tests/gpu/`, `nasctl bench` at the papers' settings with every switch, and a
one-epoch search per stabilizer and per relaxation on the DARTS space, then writes gpu-check.json and
gpu-check.md in the folder it names, with the projected time of 50-epoch searches from the measured
steps/s. Without CUDA it says so and exits 2; `GPU_CHECK=cpu` runs the same at tiny sizes on a CPU.
What it runs is `conf/gpu_check.yaml`. Only the standard library is imported before the wheels are in.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / ".gpu-wheels"
NEEDED = ("hydra", "omegaconf", "antlr4", "submitit", "hydra_plugins.hydra_joblib_launcher",
          "hydra_plugins.hydra_submitit_launcher")
MODES = ("cuda", "cpu")


def say(text: str) -> None:
    print(f"gpu-check: {text}", flush=True)


def missing() -> list[str]:
    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:
            return True

    return [name for name in NEEDED if absent(name)]


def install() -> str | None:
    """Install the missing packages from .gpu-wheels/ into a temporary folder put on the path; returns it."""
    if not (lacking := missing()):
        return None
    wheels = sorted(WHEELS.glob("*.whl"))
    if not wheels:
        say(f"this Python lacks {', '.join(lacking)} and {WHEELS} holds no wheels: run `make gpu-wheels` where "
            "the package registry is reachable, and bring .gpu-wheels/ along with the tree.")
        raise SystemExit(2)
    site = tempfile.mkdtemp(prefix="nasctl-gpu-check-site-")
    say(f"installing {len(wheels)} wheels from {WHEELS.name}/ into {site} (lacking: {', '.join(lacking)})")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--target", site, *map(str, wheels)], check=True)
    sys.path.insert(0, site)
    importlib.invalidate_caches()
    return site


def environment(site: str | None) -> dict[str, str]:
    """The environment of the commands the check starts: the repository and the installed wheels first."""
    path = [str(REPO), *([site] if site else []), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), "PYTHONUNBUFFERED": "1"}


def step(name: str, args: list[str], log: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run `python ARGS` in the repository, echoing and logging its output; its exit status and wall time."""
    say(f"{name}: python {' '.join(args)}")
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
            tail = [*tail[-19:], line.rstrip()]
    rc = proc.wait()
    return {"name": name, "command": ["python", *args], "rc": rc, "wall_s": round(time.perf_counter() - t0, 1),
            "log": log.name, "tail": tail[-3:]}


def options(group: str) -> list[str]:
    """The options of a config group (every stabilizer or relaxation this checkout has), or none."""
    folder = REPO / "conf" / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def searches(group: str, names: list[str], cfg: Any, out: Path, env: dict[str, str]) -> tuple[dict, list[dict]]:
    """A one-epoch search per option of `group`, as one Hydra multirun: the step, and each job's outcome."""
    sweep = out / "runs" / group
    done = step(f"search per {group}", ["-m", "nasctl", "search", "-m", f"{group}={','.join(names)}", *cfg.search,
                                 f"hydra.sweep.dir={sweep}"], out / f"search_{group}.log", env)
    rows = []
    for num, name in enumerate(names):
        run = sweep / str(num)
        manifest = json.loads((run / "manifest.json").read_text()) if (run / "manifest.json").is_file() else {}
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] if (
            run / "metrics.jsonl").is_file() else []
        last = metrics[-1] if metrics else {}
        rows.append({"group": group, "name": name, "status": manifest.get("status", "not started"),
                     "epoch_s": last.get("epoch_time"), "train_loss": last.get("train_loss"),
                     "note": manifest.get("reason", "")})
    return done, rows


def projections(bench: dict[str, Any], p: Any) -> list[dict[str, Any]]:
    """Wall time of `p.epochs` epochs of training steps at the measured steps/s (defaults, and fastest variant)."""
    steps = p.epochs * (p.train_images // p.batch_size)
    rows = []
    for label, case in p.cases.items():
        rated = [r for r in bench.get("results", []) if r["case"] == case and r["rate"]]
        if not rated:
            continue
        auto = next((r for r in rated if r["variant"] == "auto"), rated[0])
        best = max(rated, key=lambda r: r["rate"])
        rows.append({"search": label, "steps": steps, "defaults_steps_per_s": auto["rate"],
                     "defaults_h": steps / auto["rate"] / 3600, "fastest_variant": best["variant"],
                     "fastest_h": steps / best["rate"] / 3600})
    return rows


def markdown(report: dict[str, Any]) -> str:
    """One Markdown file: the device, the steps, the bench table, the searches and the projections."""
    b = report["bench"]
    lines = [f"# make gpu-check ({report['mode']}): {b.get('device_name', report['device'])}, torch {report['torch']}",
             "", f"{report['created']}; folder `{report['out']}`. Steps:", "",
             "| step | exit | wall s | last line |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['name']} | {s['rc']} | {s['wall_s']} | {(s['tail'] or [''])[-1]} |" for s in report["steps"]]
    lines += ["", "## nasctl bench (ratios against eager fp32 in the same process)", "",
              "| case | variant | switches | rate | unit | x eager | warm-up s | MiB | note |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def num(x: Any, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    for r in b.get("results", []):
        sw = r["switches"] or {}
        on = " ".join([sw.get("precision", ""), *(k for k, v in sw.items() if v is True)])
        lines.append(f"| {r['case']} | {r['variant']} | {on} | {num(r['rate'], '.3g')} | {r['unit']} | "
                     f"{num(r['ratio'], '.2f')} | {num(r['warmup_s'], '.1f')} | {num(r['memory_mib'], '.0f')} | "
                     f"{r['note']} |")
    lines += ["", "## One-epoch searches on the DARTS space", "", "| group | option | status | epoch s | train loss | note |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {s['group']} | {s['name']} | {s['status']} | {num(s['epoch_s'], '.1f')} | "
              f"{num(s['train_loss'], '.3f')} | {s['note']} |" for s in report["searches"]]
    lines += ["", "## Projected 50-epoch searches (training steps only, from the bench's steps/s)", "",
              "| search | steps | steps/s (defaults) | hours (defaults) | fastest variant | hours (fastest) |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {p['search']} | {p['steps']} | {p['defaults_steps_per_s']:.3g} | {p['defaults_h']:.2f} | "
              f"{p['fastest_variant']} | {p['fastest_h']:.2f} |" for p in report["projections"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    mode = os.environ.get("GPU_CHECK", "cuda")
    if mode not in MODES:
        say(f"GPU_CHECK={mode} is not one of {', '.join(MODES)}.")
        return 2
    import torch  # on every GPU image; imported here, after the mode is known

    if mode == "cuda" and not torch.cuda.is_available():
        say(f"no CUDA GPU here (torch {torch.__version__} sees none); `GPU_CHECK=cpu make gpu-check` runs the "
            "same check at tiny sizes on the CPU.")
        return 2
    env = environment(install())
    from omegaconf import OmegaConf

    settings = OmegaConf.load(REPO / "conf" / "gpu_check.yaml")
    cfg = settings[mode]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(os.environ.get("GPU_CHECK_OUT") or REPO / settings.out_root / f"{stamp}-{mode}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if mode == "cuda" else "cpu"
    say(f"{mode} on {device}; results go to {out}")
    steps = [step("tests/gpu", ["-m", "pytest", "-q", "-p", "no:cacheprovider", *cfg.pytest], out / "pytest.log", env)]
    steps.append(step("bench", ["-m", "nasctl", "bench", *cfg.bench, f"output={out / 'bench.json'}"],
                      out / "bench.log", env))
    bench = json.loads((out / "bench.json").read_text()) if (out / "bench.json").is_file() else {}
    runs: list[dict[str, Any]] = []
    for group in ("stabilizer", "relaxation"):
        if names := options(group):
            done, rows = searches(group, names, cfg, out, env)
            steps.append(done)
            runs += rows
    report = {"mode": mode, "device": device, "torch": torch.__version__, "created": stamp, "out": str(out),
              "steps": steps, "bench": bench, "searches": runs, "projections": projections(bench, settings.projection)}
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2))
    (out / "gpu-check.md").write_text(markdown(report))
    for p in report["projections"]:
        say(f"projected {settings.projection.epochs}-epoch {p['search']} search: {p['defaults_h']:.2f} h with the "
            f"defaults ({p['defaults_steps_per_s']:.3g} steps/s), {p['fastest_h']:.2f} h with {p['fastest_variant']}")
    failed = [s["name"] for s in steps if s["rc"]] + [f"{r['group']}={r['name']}" for r in runs if r["status"] != "completed"]
    failed += [f"bench {r['case']}/{r['variant']}" for r in bench.get("results", []) if r["note"].startswith("failed")]
    say(f"wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
