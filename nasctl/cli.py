"""The `nasctl` command: one Typer subcommand per stage; everything after it goes to Hydra.

    nasctl search stabilizer=sdarts_adv space=darts dataset=cifar10 seed=2
    nasctl search -m stabilizer=none,sdarts_rs seed=0,1,2
    nasctl search --cfg job
    nasctl derive run=latest
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


def _stage(name: str, doc: str, *groups: str) -> None:
    def command(overrides: Overrides = None) -> None:
        from nasctl import entry

        entry.main(name, overrides or [])

    command.__doc__ = doc + (_groups(*groups) if groups else "")
    app.command(name, context_settings=PASSTHROUGH)(command)


_stage(
    "search",
    "Search a supernet: bilevel DARTS with the chosen stabilizers.\n\n"
    "e.g. nasctl search experiment=quickstart; nasctl search -m stabilizer=none,sdarts_rs seed=0,1,2",
    "space", "dataset", "stabilizer", "trainer", "experiment",
)
_stage("derive", "Derive and save the genotype of a search run.\n\ne.g. nasctl derive run=latest; nasctl derive run=runs/search/<id> epoch=10")


if __name__ == "__main__":
    app()
