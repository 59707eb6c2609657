"""The `nasctl` command: one Typer subcommand per stage; everything after it goes to Hydra.

    nasctl search stabilizer=sdarts_adv space=darts dataset=cifar10 seed=2
    nasctl search -m stabilizer=none,sdarts_rs seed=0,1,2
    nasctl search --cfg job
    nasctl derive run=latest
    nasctl retrain genotype=latest
    nasctl evaluate run=latest
    nasctl report runs/search/multirun/<id>
"""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from nasctl import conf_dir

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Hydra overrides and flags: key=value, group=option, -m, --cfg job, hydra.run.dir=..."),
]


def _groups(*names: str) -> str:
    """The config groups a stage uses and their options, for `--help`."""
    lines = []
    for g in names:
        opts = sorted(str(p.relative_to(conf_dir() / g).with_suffix("")) for p in (conf_dir() / g).rglob("*.yaml"))
        lines.append(f"  {g}: {', '.join(opts)}")
    return "\n\n[bold]Config groups[/] (choose with group=option):\n\n" + "\n\n".join(lines)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False) -> None:
    """nasctl: stabilized differentiable architecture search from the command line."""
    if debug:
        os.environ["NASCTL_DEBUG"] = os.environ["HYDRA_FULL_ERROR"] = "1"


def _stage(name: str, doc: str, *groups: str, positional: str | None = None) -> None:
    """Register a stage; with `positional`, a first argument without `=` means `<positional>=<argument>`."""

    def command(overrides: Overrides = None) -> None:
        from nasctl import entry

        args = list(overrides or [])
        if positional and args and "=" not in args[0] and not args[0].startswith("-"):
            quoted = args[0].replace("'", "\\'")
            args[0] = f"{positional}='{quoted}'"
        entry.main(name, args)

    command.__doc__ = doc + (_groups(*groups) if groups else "")
    app.command(name, context_settings=PASSTHROUGH)(command)


_stage(
    "search",
    "Search a supernet: bilevel DARTS with the chosen stabilizers.\n\n"
    "e.g. nasctl search experiment=quickstart; nasctl search -m stabilizer=none,sdarts_rs seed=0,1,2",
    "space", "dataset", "stabilizer", "trainer", "experiment",
)
_stage("derive", "Derive and save the genotype of a search run.\n\ne.g. nasctl derive run=latest; nasctl derive run=runs/search/<id> epoch=10")
_stage(
    "retrain",
    "Train a genotype's evaluation network from scratch (DARTS recipe; recipe=imagenet for ImageNet).\n\n"
    "e.g. nasctl retrain genotype=darts_v2; nasctl retrain experiment=quickstart genotype=latest",
    "dataset", "recipe", "trainer", "experiment",
)
_stage(
    "evaluate",
    "Score a retrain run (test accuracy, params, FLOPs, latency), a genotype untrained, or an NB201 arch.\n\n"
    "e.g. nasctl evaluate run=latest; nasctl evaluate genotype=darts_v2 output=json; "
    "nasctl evaluate space=nb201 genotype='|nor_conv_3x3~0|+|...|'",
    "dataset", "recipe", "space", "trainer",
)
_stage(
    "report",
    "Tables (terminal, CSV, Markdown) and plots over a sweep or a search run: accuracy, skip count, "
    "Hessian eigenvalue, NB201 accuracy, alpha trajectories, derived cells.\n\n"
    "e.g. nasctl report; nasctl report runs/search/multirun/<id>; nasctl report dir=<run> plots=false",
    positional="dir",
)
_stage(
    "bench",
    "Time search steps/s and retrain img/s under each trainer speed switch against eager fp32; "
    "prints a table and writes bench.json (docs/performance.md).\n\n"
    "e.g. nasctl bench; nasctl bench bench=gpu; nasctl bench threads=1 skip=\\[second,sdarts_adv]",
    "bench",
)


if __name__ == "__main__":
    app()
