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
import re
from typing import Annotated, Optional

import typer

from nasctl import conf_dir

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich")
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Hydra overrides and flags: key=value, group=option, -m, --cfg job, hydra.run.dir=..."),
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout (the same as output=json).")]
GENOTYPE_ARG = re.compile(r"(\+{0,2}genotype)=(.+)", re.S)
PASTED = ("|", "Genotype(", "{")  # an NB201 arch string, the DARTS repositories' literal, JSON


def split_top(value: str) -> list[str]:
    """Split a sweep value at the commas outside brackets and quotes (`a,Genotype(x, y)` -> 2 items)."""
    items, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(value):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    return [*items, value[start:]]


def quote_pasted(arg: str) -> str:
    """`genotype=<a cell as its field prints it>` quoted for Hydra's grammar, each item of a sweep on its own."""
    m = GENOTYPE_ARG.fullmatch(arg)
    if not m:
        return arg
    items = [v.strip() if v.strip().startswith(PASTED) else v for v in split_top(m.group(2))]
    quoted = [("'" + v.replace("'", "\\'") + "'") if v.startswith(PASTED) else v for v in items]
    return f"{m.group(1)}={','.join(quoted)}"


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


def _stage(name: str, doc: str, *groups: str, positional: str | None = None, json_flag: bool = False,
           implies: dict[str, str] | None = None) -> None:
    """Register a stage. `positional`: a first argument without `=` means `<positional>=<argument>`;
    `json_flag`: `--json` means output=json; `implies`: an argument that adds another unless its key is given."""

    def run(args: list[str]) -> None:
        from nasctl import entry

        if positional and args and "=" not in args[0] and not args[0].startswith("-"):
            quoted = args[0].replace("'", "\\'")
            args[0] = f"{positional}='{quoted}'"
        for given, extra in (implies or {}).items():
            if given in args and not any(a.startswith(extra.split("=")[0] + "=") for a in args):
                args.append(extra)
        entry.main(name, [quote_pasted(a) for a in args])

    if json_flag:
        def command(overrides: Overrides = None, as_json: JsonFlag = False) -> None:
            run([*(overrides or []), *(["output=json"] if as_json else [])])
    else:
        def command(overrides: Overrides = None) -> None:
            run(list(overrides or []))

    command.__doc__ = doc + (_groups(*groups) if groups else "")
    app.command(name, context_settings=PASSTHROUGH)(command)


_stage(
    "search",
    "Search a supernet: bilevel DARTS (or another relaxation) with the chosen stabilizers.\n\n"
    "e.g. nasctl search experiment=quickstart; nasctl search -m relaxation=darts,gdas stabilizer=none,sdarts_rs seed=0,1,2",
    "space", "dataset", "relaxation", "stabilizer", "trainer", "experiment",
)
_stage("derive", "Derive and save the genotype of a search run.\n\ne.g. nasctl derive run=latest; nasctl derive run=runs/search/<id> epoch=10; "
       "nasctl derive run=latest selection=darts_pt (DARTS-PT on the trained supernet)")
_stage(
    "retrain",
    "Train a genotype's evaluation network from scratch (DARTS recipe; recipe=imagenet for ImageNet).\n\n"
    "e.g. nasctl retrain genotype=darts_v2; nasctl retrain experiment=quickstart genotype=latest",
    "dataset", "recipe", "trainer", "experiment",
)
_stage(
    "evaluate",
    "Score a retrain run (test accuracy, params, FLOPs, latency), a genotype untrained, or an NB201 arch.\n\n"
    "e.g. nasctl evaluate run=latest; nasctl evaluate genotype=darts_v2 --json; "
    "nasctl evaluate genotype=darts_v2 dataset=imagenet (= recipe=imagenet); "
    "nasctl evaluate space=nb201 'genotype=|nor_conv_3x3~0|+|...|'",
    "dataset", "recipe", "space", "trainer",
    json_flag=True, implies={"dataset=imagenet": "recipe=imagenet"},
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
