"""Issue 17's table, row by row: each bad input gets nasctl's one paragraph and exit 2, each pasted cell works.

In process (the Typer app itself, so argv rewriting and Hydra's parsing are the real ones); one test
starts the real entry point as a process.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from nasctl.cli import quote_pasted, split_top
from nasctl.genotype import ZOO
from tests.conftest import TINY_ANY_SPACE, TINY_SEARCH, nasctl

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_SKIP = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
# quark0/darts cnn/genotypes.py DARTS_V2 as that file prints it
DARTS_V2 = ("Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1), ('sep_conv_3x3', 0), ('sep_conv_3x3', 1), "
            "('sep_conv_3x3', 1), ('skip_connect', 0), ('skip_connect', 0), ('dil_conv_3x3', 2)], "
            "normal_concat=range(2, 6), reduce=[('max_pool_3x3', 0), ('max_pool_3x3', 1), ('skip_connect', 2), "
            "('max_pool_3x3', 1), ('max_pool_3x3', 0), ('skip_connect', 2), ('skip_connect', 2), "
            "('max_pool_3x3', 1)], reduce_concat=range(2, 6))")
PROFILE = ["latency.warmup=0", "latency.repeats=1", "batch_size=1", "trainer=cpu"]


def one_paragraph(err: str) -> str:
    """The error, checked to be nasctl's own: one `error:` paragraph, no traceback, no Hydra advice."""
    text = " ".join(err.split())
    assert text.startswith("error: ") and text.count("error:") == 1, err
    for hydra_says in ("Traceback", "HYDRA_FULL_ERROR", "use +", "Hydra's exception formatting", "See https://hydra"):
        assert hydra_says not in text, err
    assert "nasctl --debug" in text
    return text


# -- 1. paste what the field prints ---------------------------------------------------------------
def test_sweep_items_split_outside_brackets_and_pasted_cells_are_quoted():
    assert split_top("darts_v1,Genotype(normal=[('a', 0)], x=range(2, 6)),'|a~0|,b'") == [
        "darts_v1", "Genotype(normal=[('a', 0)], x=range(2, 6))", "'|a~0|,b'"]
    assert quote_pasted(f"genotype={ARCH}") == f"genotype='{ARCH}'"
    assert quote_pasted("genotype=darts_v1,darts_v2") == "genotype=darts_v1,darts_v2"
    assert quote_pasted(f"genotype='{ARCH}'") == f"genotype='{ARCH}'"  # already quoted: as typed
    assert quote_pasted("genotype=Genotype(normal=[('a', 0)])") == "genotype='Genotype(normal=[(\\'a\\', 0)])'"


def test_nb201_arch_string_pasted_unquoted(cli, nb201_table):
    code, out, err = cli("evaluate", "space=nb201", f"genotype={ARCH}", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["genotype"] == ARCH and 0 < result["benchmark"]["cifar10"] < 100


def test_nb201_arch_strings_pasted_in_a_sweep(cli, nb201_table):
    code, out, err = cli("evaluate", "-m", "space=nb201", f"genotype={ARCH},{ALL_SKIP}", "output=json")
    assert code == 0, err
    assert [json.loads(line)["genotype"] for line in out.splitlines() if line.startswith("{")] == [ARCH, ALL_SKIP]


def test_genotype_literal_pasted_unquoted_builds_the_same_network(cli):
    code, out, err = cli("evaluate", f"genotype={DARTS_V2}", *PROFILE, "--json")
    assert code == 0, err
    pasted = json.loads(out)
    code, out, err = cli("evaluate", "genotype=darts_v2", *PROFILE, "--json")
    assert code == 0, err
    assert pasted["genotype"] == json.loads(out)["genotype"] == ZOO["darts_v2"].to_dict()
    assert pasted["params_m"] == json.loads(out)["params_m"]


def test_genotype_literal_pasted_into_retrain(cli):
    code, out, err = cli("retrain", "--cfg", "job", f"genotype={DARTS_V2}")
    assert code == 0, err
    assert "Genotype(normal=[('sep_conv_3x3', 0)" in out


@pytest.mark.parametrize(
    "args, expected",
    [
        (["genotype=Genotype(normal=[('sep_conv_3x3', 0)"], "expected JSON, a Genotype(...) literal or an NB201 arch string"),
        (['genotype={"normal": [['], 'expected {"normal": [["sep_conv_3x3", 0], ...], "normal_concat": [2, 3, 4, 5]'),
        (["space=nb201", "genotype=|foo~0|"], "expected a string like |nor_conv_3x3~0|+|skip_connect~0|none~1|+|"),
    ],
    ids=["literal", "json", "arch_string"],
)
def test_an_unreadable_pasted_genotype_says_what_was_expected(cli, request, args, expected):
    if "space=nb201" in args:
        request.getfixturevalue("nb201_table")
    code, _, err = cli("evaluate", *args, *PROFILE)
    assert code == 2
    assert expected in one_paragraph(err)


# -- 2. the promised forms ------------------------------------------------------------------------
def test_evaluate_json_flag_prints_one_json_object(cli):
    code, out, err = cli("evaluate", "genotype=darts_v2", "dataset=cifar10", *PROFILE, "--json")
    assert code == 0, err
    assert json.loads(out)["dataset"] == "cifar10" and len(out.strip().splitlines()) == 1


def test_evaluate_dataset_imagenet_builds_the_imagenet_network(cli):
    code, out, err = cli("evaluate", "genotype=darts_v2", "dataset=imagenet", *PROFILE, "--json")
    assert code == 0, err
    by_dataset = json.loads(out)
    code, out, err = cli("evaluate", "genotype=darts_v2", "recipe=imagenet", *PROFILE, "--json")
    assert code == 0, err
    assert by_dataset == {**json.loads(out), "latency_ms": by_dataset["latency_ms"]}
    assert by_dataset["dataset"] == "imagenet" and by_dataset["params_m"] == pytest.approx(4.72, abs=0.01)  # DARTS: 4.7M


# -- 4. one error path ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stage, args, message",
    [
        ("search", ["seed=abc"], "seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        ("search", ["search.epoch=3"], "search.epoch=3: nasctl search has no key 'search.epoch' (did you mean search.epochs?)"),
        ("retrain", ["space=nb201", "genotype=darts_v2"], "space=nb201: nasctl retrain has no config group 'space'"),
        ("search", ["stabilizer=bogus"], "stabilizer=bogus: no such option; stabilizer is one of amended,"),
        ("search", ["hydra.run.dir=a b("], "cannot read the override 'hydra.run.dir=a b('"),
        ("search", ["seed=0,1"], "seed=0,1: a value with commas is a sweep; add -m"),
        ("search", ["resume=not_a_run"], "resume=not_a_run: not a nasctl run directory (no manifest.json) (a run stopped before it wrote its manifest"),
        ("search", ["stabilizer=[sdarts_rs,sdarts_adv]"], "stabilizer=[sdarts_rs,sdarts_adv] cannot be combined"),
    ],
    ids=["type", "unknown_key", "group_of_another_stage", "unknown_option", "grammar", "sweep_without_m",
         "resume_not_a_run", "literal"],
)
def test_hydra_and_nasctl_errors_are_one_paragraph_exit_2(cli, tmp_path, stage, args, message):
    (tmp_path / "not_a_run").mkdir()
    code, _, err = cli(stage, *TINY_SEARCH, *args) if stage == "search" else cli(stage, *args)
    assert code == 2
    assert message in one_paragraph(err)


def test_an_uncreatable_run_directory_is_named(cli, tmp_path):
    (tmp_path / "file").write_text("")
    code, _, err = cli("search", *TINY_SEARCH, "hydra.run.dir=file/run")
    assert code == 2
    text = one_paragraph(err)
    assert "cannot create or write file/run: Not a directory" in text and "hydra.run.dir=" in text


@pytest.mark.parametrize(
    "stage, arg, message",
    [
        ("search", "dataset.subset=-5", "dataset.subset must be >= 1, got -5."),
        ("search", "search.arch_lr=-0.1", "search.arch_lr must be >= 0, got -0.1."),  # torch's own refusal before
        ("search", "search.w_lr=0", "search.w_lr must be > 0, got 0.0."),
        ("search", "search.w_momentum=1.5", "search.w_momentum must be in [0, 1), got 1.5."),
        ("search", "search.w_weight_decay=-1e-4", "search.w_weight_decay must be >= 0, got -0.0001."),
        ("search", "search.arch_betas=[0.5,1.0]", "search.arch_betas[1] must be in [0, 1), got 1.0."),
        ("search", "search.epochs=0", "search.epochs must be >= 1, got 0."),
        ("search", "search.batch_size=-1", "search.batch_size must be >= 1, got -1."),
        ("search", "search.train_portion=1", "search.train_portion must be in (0, 1), got 1.0."),
        ("search", "stabilizer=sdarts_rs stabilizer.sdarts_rs.epsilon=-0.1",
         "stabilizer.sdarts_rs.epsilon must be >= 0, got -0.1."),
        ("search", "stabilizer=beta_decay stabilizer.beta_decay.lambda_max=-1",
         "stabilizer.beta_decay.lambda_max must be >= 0, got -1."),
        ("search", "relaxation=gdas relaxation.tau_min=0", "relaxation.tau_min must be > 0, got 0"),
        ("search", "relaxation=pc_darts relaxation.partial_channels=0", "relaxation.partial_channels must be >= 1, got 0"),
        ("retrain", "retrain.lr=-0.025", "retrain.lr must be > 0, got -0.025."),
        ("retrain", "retrain.momentum=-0.9", "retrain.momentum must be in [0, 1), got -0.9."),
        ("retrain", "retrain.batch_size=0", "retrain.batch_size must be >= 1, got 0."),
        ("evaluate", "batch_size=0", "batch_size must be >= 1, got 0."),
        ("search", "search.w_nesterov=true search.w_momentum=0", "search.w_nesterov=true needs search.w_momentum > 0"),
    ],
)
def test_numeric_ranges_are_checked_before_any_work(cli, tmp_path, stage, arg, message):
    base = {"search": TINY_SEARCH, "retrain": ["genotype=darts_v2"], "evaluate": ["genotype=darts_v2"]}[stage]
    code, _, err = cli(stage, *base, *arg.split())
    assert code == 2
    assert message in one_paragraph(err)
    assert not list(tmp_path.glob("**/manifest.json")), "a refused command must not start a run"


def test_an_optimizers_own_refusal_names_the_section():
    import torch

    from nasctl.errors import NasctlError
    from nasctl.train.trainer import optimizer_settings

    with pytest.raises(NasctlError, match=r"torch.optim refused the retrain\.\* settings: Nesterov momentum requires"):
        with optimizer_settings("retrain"):
            torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, nesterov=True)


# -- the real entry point ------------------------------------------------------------------------
@pytest.mark.slow
def test_the_installed_command_exits_2_with_nasctls_message(tmp_path):
    out = nasctl("search", *TINY_SEARCH, "seed=abc", cwd=tmp_path)
    assert out.returncode == 2
    assert "seed=abc" in one_paragraph(out.stderr) and not out.stdout
    assert not Path(tmp_path, "runs").exists() or not list(Path(tmp_path, "runs").glob("**/manifest.json"))


# -- 5. logs that read ----------------------------------------------------------------------------
def test_progress_outside_a_terminal_is_whole_lines(cli, fashion):
    args = [a for a in TINY_SEARCH if not a.startswith("trainer.progress")]
    code, out, err = cli("search", *args, "trainer.progress=true", "trainer.log_every=1", "trainer=cpu")
    assert code == 0, err
    lines = [x for x in out.splitlines() if x.startswith("search ")]
    step = r"train_loss=\d+\.\d{3} train_acc=\d+\.\d{3} \d+:\d\d:\d\d"
    expected = [rf"search 1/2 step 1/2 {step}", rf"search 1/2 step 2/2 {step}",
                r"search 1/2 done train_loss=\S+ train_acc=\S+ val_acc=\d+\.\d{3} \d+:\d\d:\d\d",
                rf"search 2/2 step 1/2 {step}", rf"search 2/2 step 2/2 {step}", r"search 2/2 done .* val_acc="]
    assert len(lines) == len(expected) and all(re.match(p, x) for p, x in zip(expected, lines)), out
    assert "━" not in out and "…" not in out


def test_progress_in_a_terminal_is_the_rich_bar():
    from rich.console import Console
    from rich.progress import Progress

    from nasctl.train.progress import LineProgress, progress_display

    assert isinstance(progress_display(True, Console(force_terminal=True)), Progress)
    assert isinstance(progress_display(True, Console(force_terminal=False, file=io.StringIO())), LineProgress)


def test_every_range_names_a_number_of_conf_and_every_preset_is_in_range():
    """RANGES does not rot: each key is a number (or null) of some composed config; no default or preset breaks one."""
    from omegaconf import OmegaConf

    from nasctl.config import RANGES, check_ranges
    from tests.unit.test_config import CASES, composed

    seen = set()
    for primary, overrides in CASES:
        cfg = composed(primary, overrides)
        check_ranges(cfg)  # raises on a default out of its range
        for key in RANGES:
            try:
                value = OmegaConf.select(cfg, key, default=KeyError, throw_on_missing=False)
            except Exception:  # noqa: BLE001  (a path through a list)
                continue
            if value is None or isinstance(value, (int, float)) or OmegaConf.is_list(value):
                seen.add(key)
    assert set(RANGES) - seen == set()


# -- the other stages' error checks, in process: exit 2 and nasctl's one paragraph (docs/errors.md) ----
@pytest.mark.parametrize(
    "args, needle",
    [
        (["stabilizer=bogus"], "sdarts"),  # Hydra lists the available options
        (["search.epoch=3"], "epoch"),
        (["search.epochs=abc"], "epochs"),
        (["search.epochs=0"], "search.epochs must be >= 1, got 0."),
        (["search.batch_size=-1"], "search.batch_size must be >= 1, got -1."),
        (["dataset=cifar10", "dataset.root=/nonexistent/cifar"], "/nonexistent/cifar"),
        (["trainer.device=cuda"], "no CUDA GPU"),
        (["space.name=nospace"], "Unknown search space 'nospace'"),
    ],
)
def test_bad_search_input_is_one_paragraph_and_exit_2(cli, args, needle):
    code, out, err = cli("search", *TINY_SEARCH, *args)
    assert code == 2, err
    assert needle in " ".join((err + out).split())
    one_paragraph(err)


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "space=nb201", "genotype=darts_v2"], "space=nb201"),
        (["evaluate", "space=darts", f"genotype='{ALL_SKIP}'"], "NB201 arch string"),
        (["evaluate", "genotype=darts_v9"], "darts_v2"),
        (["evaluate"], "run=<retrain run"),
        (["evaluate", "run=latest"], "no retrain run"),
        (["retrain", f"genotype='{ALL_SKIP}'"], "nasctl evaluate space=nb201"),
        (["retrain"], "retrain needs genotype="),
        (["retrain", "genotype=darts_v2", "dataset=imagenet"], "recipe=imagenet"),
        (["derive", "run=latest"], "no search run found"),
        (["report", "."], "no search run"),
    ],
    ids=["darts_in_nb201", "nb201_in_darts", "unknown_zoo", "nothing", "no_run", "retrain_nb201", "no_genotype",
         "imagenet_cifar_net", "derive_no_run", "report_no_run"],
)
def test_clear_stage_errors_exit_2_and_leave_no_run(cli, tmp_path, args, message):
    code, _, err = cli(*args)
    assert code == 2, err
    assert message in one_paragraph(err)
    assert not list(tmp_path.glob("runs/**/manifest.json")), "a refused command must not leave a run"


def test_nb201_with_a_missing_table_fails_before_training(cli, tmp_path, fashion):
    code, _, err = cli("search", "space=nb201", "space.N=1", *TINY_ANY_SPACE, f"paths.nb201={tmp_path}/none.csv")
    assert code == 2 and "none.csv does not exist" in one_paragraph(err)
    assert not list(tmp_path.glob("runs/search/*/checkpoints/*.pt"))
