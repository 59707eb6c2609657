"""The stabilizers: each one's math against hand-computed values, then real tiny searches, alone and combined."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import nasctl
import nasctl.entry  # noqa: F401  (registers the schemas and resolvers of conf/search.yaml)
from nasctl.errors import NasctlError
from nasctl.relaxations import EdgeMix
from nasctl.search.stage import run_search
from nasctl.spaces import space_config
from nasctl.spaces.base import MixedOp, Supernet
from nasctl.spaces.darts import DartsSupernet
from nasctl.spaces.ops import FactorizedReduce
from nasctl.stabilizers import STABILIZERS, Batches, Stabilizers
from nasctl.stabilizers.darts_minus import beta_at
from nasctl.stabilizers.sdarts import project
from tests.conftest import TINY_ANY_SPACE, TINY_SEARCH, darts_space
from tests.conftest import nasctl as nasctl_cli

CONF = nasctl.conf_dir()
DARTS_OPS = list(OmegaConf.load(CONF / "space" / "darts.yaml").ops)


def stabilizer(name: str, **overrides) -> Stabilizers:
    """The stabilizer `name` with its conf/stabilizer defaults and `overrides`."""
    node = OmegaConf.merge(OmegaConf.load(CONF / "stabilizer" / f"{name}.yaml"), overrides)
    return Stabilizers({name: node})


def attached(name: str, model: Supernet, **overrides) -> Stabilizers:
    """`stabilizer(name, **overrides)` configured on `model`."""
    s = stabilizer(name, **overrides)
    s.configure(model)
    return s


def supernet(ops: list[str] = DARTS_OPS) -> DartsSupernet:
    """Three cells: cell 0 normal, cells 1-2 reduction (stride-2 edges from the cell inputs)."""
    torch.manual_seed(0)
    return DartsSupernet(darts_space(ops=list(ops), C=4, layers=3), num_classes=10, in_channels=1)


def batches(n: int = 8) -> Batches:
    g = torch.Generator().manual_seed(1)
    x = lambda: torch.randn(n, 1, 12, 12, generator=g)
    y = lambda: torch.randint(0, 10, (n,), generator=g)
    return Batches(x(), y(), x(), y())


def loss_fn(model: Supernet):
    return lambda x, y: F.cross_entropy(model(x), y)


def softmaxes(model: Supernet) -> dict[str, torch.Tensor]:
    return {k: torch.softmax(a.detach(), -1) for k, a in model.alphas.items()}


def renormalised_within(p: torch.Tensor, w0: torch.Tensor, eps: float) -> bool:
    """Is every row of p equal to c / sum(c) for some c in [0, 1] with |c - w0| <= eps elementwise?

    c = s p for a row scale s > 0; each element bounds s, and the row is feasible iff the bounds meet.
    """
    pos = p > 0
    inf = torch.full_like(p, math.inf)
    lo = torch.where(pos, (w0 - eps) / p, -inf).amax(-1).clamp_min(0)
    hi = torch.where(pos, torch.minimum((w0 + eps) / p, 1 / p), inf).amin(-1)
    zeros_ok = torch.where(pos, True, w0 <= eps + 1e-7).all(-1)
    return bool((zeros_ok & (lo <= hi * (1 + 1e-5))).all())


# -- SDARTS -----------------------------------------------------------------------------------
def test_project_clamps_falls_back_to_the_pre_clamp_argmax_and_renormalises():
    w = torch.tensor([[0.5, -0.2, 0.25, 0.0], [1.5, 0.3, -1.0, 0.2], [-0.3, -0.1, -0.2, -0.4]])
    p = project(w)
    assert torch.allclose(p[0], torch.tensor([0.5, 0.0, 0.25, 0.0]) / 0.75)
    assert torch.allclose(p[1], torch.tensor([1.0, 0.3, 0.0, 0.2]) / 1.5)
    assert torch.equal(p[2], torch.tensor([0.0, 1.0, 0.0, 0.0]))  # all clamped to 0: one-hot at argmax -0.1


def test_sdarts_rs_weight_step_uses_a_projected_uniform_perturbation_of_softmax_alpha():
    model, b = supernet(), batches()
    s = stabilizer("sdarts_rs")
    assert s.on_epoch_start(model, 25, 50) == {"sdarts_epsilon": pytest.approx(0.03 + 0.27 * 25 / 50)}
    eps, clean, alphas = 0.165, softmaxes(model), [a.detach().clone() for a in model.arch_parameters()]
    torch.manual_seed(7)
    with s.weight_step(model, b, loss_fn(model)):
        used = {k: w.clone() for k, w in model.mixing().items()}
    torch.manual_seed(7)
    expected = {k: project(w + torch.empty_like(w).uniform_(-eps, eps)) for k, w in clean.items()}
    for k, w in used.items():
        assert torch.allclose(w, expected[k])
        # what holds after projection: rows on the simplex, and each row a renormalisation of a point
        # of [0, 1] within eps of softmax(alpha) elementwise (the clamp only moves values towards it)
        assert (w >= 0).all() and torch.allclose(w.sum(-1), torch.ones(w.shape[0]))
        assert renormalised_within(w, clean[k], eps)
        assert not renormalised_within(w, clean[k], eps / 20)  # it did move
    assert all(torch.equal(a, a0) for a, a0 in zip(model.arch_parameters(), alphas))
    assert all(torch.allclose(model.mixing()[k], clean[k]) for k in clean)  # the override ended with the step


@pytest.mark.slow
def test_sdarts_adv_raises_the_training_loss_or_reverts_in_eval_mode_and_leaves_alpha_alone():
    model, b = supernet(), batches(16)
    model.train()
    w_opt = torch.optim.SGD(model.weight_parameters(), lr=0.1)
    s = stabilizer("sdarts_adv", steps=3)
    s.on_epoch_start(model, 49, 50)
    eps = 0.03 + 0.27 * 49 / 50
    outcomes = []
    for seed in range(4):
        torch.manual_seed(seed)
        clean, alphas = softmaxes(model), [a.detach().clone() for a in model.arch_parameters()]
        stats = [t.clone() for t in model.buffers()]
        with s.weight_step(model, b, loss_fn(model)):
            assert model.training, "the attack must hand the model back in train mode"
            assert all(torch.equal(t, t0) for t, t0 in zip(model.buffers(), stats)), "the attack runs in eval mode"
            used = {k: w.clone() for k, w in model.mixing().items()}
            model.eval()  # the attack's objective: the training loss with BN running statistics
            with torch.no_grad(), model.mixing_override(clean):
                before = F.cross_entropy(model(b.x_train), b.y_train)
            with torch.no_grad(), model.mixing_override(used):
                after = F.cross_entropy(model(b.x_train), b.y_train)
            model.train()
            w_opt.zero_grad()
            F.cross_entropy(model(b.x_train), b.y_train).backward(inputs=model.weight_parameters())
            w_opt.step()
        assert all(torch.equal(a, a0) and a.grad is None for a, a0 in zip(model.arch_parameters(), alphas))
        reverted = all(torch.equal(used[k], clean[k]) for k in clean)
        assert reverted or after >= before
        assert all(renormalised_within(used[k], clean[k], eps) for k in clean)
        outcomes.append(reverted)
    assert not all(outcomes), "a 3-step PGD at eps ~0.3 should raise the loss of a random network"


@pytest.mark.slow
def test_the_two_sdarts_variants_cannot_be_combined(tmp_path):
    rs, adv = (OmegaConf.load(CONF / "stabilizer" / f"{n}.yaml") for n in ("sdarts_rs", "sdarts_adv"))
    with pytest.raises(NasctlError, match=r"sdarts_rs,sdarts_adv.*mixing"):
        Stabilizers({"sdarts_rs": rs, "sdarts_adv": adv})
    done = nasctl_cli("search", *TINY_SEARCH, "stabilizer=[sdarts_rs,sdarts_adv]", cwd=tmp_path)
    assert done.returncode == 2 and "cannot be combined" in done.stderr and "Traceback" not in done.stderr


# -- schedules ---------------------------------------------------------------------------------
# The official per-epoch formulas, written out from the reference code (e = 0-based epoch):
OFFICIAL = {
    # SD sota/cnn/train_search.py:169-171 and nasbench201/train_search.py:169-171 (E = --epochs)
    "sdarts_rs": lambda e, E: 0.03 + (0.3 - 0.03) * e / E,
    # DM src/utils.py:170-192 DecayScheduler linear, T_start 0, T_stop = T_max = 50 (args.py:80-82)
    "darts_minus": lambda e, E: 1.0 * (50 - e) / (50 - 0) if e <= 50 else 0.0,
    # ND model_search.py:14-24 CosineDecayScheduler, T_max = 50, with --noise_decay
    "noisy": lambda e, E: (1 + math.cos(math.pi * e / 50)) / 2 if e <= 50 else 0.0,
    # BD optimizers/darts/architect.py:81, weights = 0 + 50 * epoch / 100
    "beta_decay": lambda e, E: 0 + 50 * e / 100,
}
PAPER_EPOCHS = {"sdarts_rs": (50, 100), "darts_minus": (50,), "noisy": (50,), "beta_decay": (100,)}
OVERRIDES = {"noisy": {"decay": True}}


def schedule(name: str, epochs: int, **overrides) -> list[float]:
    """The logged value of `name`'s schedule at every epoch of a run of `epochs` epochs."""
    model = supernet()
    s = attached(name, model, **{**OVERRIDES.get(name, {}), **overrides})
    return [next(iter(s.on_epoch_start(model, e, epochs).values())) for e in range(epochs)]


@pytest.mark.parametrize("name, epochs", [(n, E) for n, lengths in PAPER_EPOCHS.items() for E in lengths])
def test_every_schedule_at_its_papers_length_is_the_official_code_epoch_by_epoch(name, epochs):
    assert schedule(name, epochs) == pytest.approx([OFFICIAL[name](e, epochs) for e in range(epochs)], abs=1e-12)


@pytest.mark.parametrize("name", sorted(PAPER_EPOCHS))
@pytest.mark.parametrize("epochs", [5, 10, 25])
def test_at_other_lengths_every_schedule_covers_the_same_ramp_in_proportion(name, epochs):
    paper = PAPER_EPOCHS[name][0]
    k = paper // epochs  # epoch e of the short run is epoch k e of the paper's
    assert schedule(name, epochs) == pytest.approx(schedule(name, paper)[::k], abs=1e-12)


@pytest.mark.parametrize(
    "preset, name, official",
    [
        ("paper/beta_darts", "beta_decay", lambda e: 0.5 * e),  # the code's absolute line over 50 epochs
        ("paper/beta_darts_nb201", "beta_decay", lambda e: 0.5 * e),
        ("paper/darts_minus", "darts_minus", lambda e: (50 - e) / 50),
    ],
)
def test_paper_presets_keep_the_papers_absolute_schedules(preset, name, official):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[f"experiment={preset}"])
    s, model = Stabilizers(cfg.stabilizer), supernet()
    s.configure(model)
    E = cfg.search.epochs
    got = [next(iter(s.on_epoch_start(model, e, E).values())) for e in range(E)]
    assert got == pytest.approx([official(e) for e in range(E)], abs=1e-12)
    short = [next(iter(s.on_epoch_start(model, e, 10).values())) for e in range(10)]
    assert short == pytest.approx([official(e) for e in range(10)], abs=1e-12)  # absolute: not rescaled


# -- DARTS- -----------------------------------------------------------------------------------
def test_darts_minus_linear_beta_is_the_reference_schedule():
    model = supernet()
    s = attached("darts_minus", model)
    betas = [s.on_epoch_start(model, e, 50)["darts_minus_beta"] for e in (0, 1, 2, 25, 49)]
    assert betas == pytest.approx([1.00, 0.98, 0.96, 0.50, 0.02])
    cfg = s.members["darts_minus"].cfg
    assert [beta_at(cfg, e, 50) for e in range(50)] == pytest.approx([1 - 0.02 * e for e in range(50)])
    assert [beta_at(cfg, e, 4) for e in range(4)] == pytest.approx([1, 0.75, 0.5, 0.25])  # spans a 4-epoch run


@pytest.mark.parametrize(
    "overrides, epoch, beta",
    [
        ({"decay": "cosine"}, 25, 0.5),
        ({"decay": "slow_cosine"}, 25, math.cos(math.pi / 4)),
        ({"decay": "none", "beta0": 0.7}, 40, 0.7),
        ({"decay_stop_epoch": 10}, 30, 0.8),  # frozen at its epoch-10 value
        ({"decay_start_epoch": 5}, 3, 1.0),  # beta0 before the start
        ({"decay_start_epoch": 5}, 6, 44 / 45),  # (max - e) / (max - start), e not shifted (as the code)
    ],
)
def test_darts_minus_schedule_variants(overrides, epoch, beta):
    model = supernet()
    scalars = attached("darts_minus", model, **overrides).on_epoch_start(model, epoch, 50)
    assert scalars["darts_minus_beta"] == pytest.approx(beta)


def test_darts_minus_adds_beta_times_the_aux_branch_outside_the_softmax_on_every_edge():
    model = supernet()
    edges = list(model.mixed_ops())
    normal = model.cells[0].edges[0]  # stride 1
    reduce = model.cells[1].edges[0]  # stride 2 (input of a reduction cell)
    assert (normal.stride, reduce.stride) == (1, 2)
    x, x8 = torch.randn(4, 4, 8, 8), torch.randn(4, 8, 8, 8)  # the reduction cell has 2C channels
    w = EdgeMix(torch.softmax(torch.randn(len(DARTS_OPS)), -1))
    plain = normal(x, w), reduce(x8, w)
    attached("darts_minus", model).on_epoch_start(model, 10, 50)
    assert all(isinstance(m.aux, torch.nn.Module) and float(m.aux.beta) == pytest.approx(0.8) for m in edges)
    assert torch.allclose(normal(x, w), plain[0] + 0.8 * x, atol=1e-6)
    assert isinstance(reduce.aux.op, FactorizedReduce) and not reduce.aux.op.bn.affine
    assert torch.allclose(reduce(x8, w), plain[1] + 0.8 * reduce.aux.op(x8), atol=1e-6)
    trainable = {id(p) for p in model.weight_parameters()}
    assert all(id(p) in trainable for p in reduce.aux.op.parameters())


def test_darts_minus_conv1_aux_starts_as_the_identity():
    model = supernet()
    attached("darts_minus", model, aux_op="conv1").on_epoch_start(model, 0, 50)
    conv = model.cells[0].edges[0].aux.op
    x = torch.randn(2, 4, 6, 6)
    assert isinstance(conv, torch.nn.Conv2d) and torch.allclose(conv(x), x)


# -- NoisyDARTS -------------------------------------------------------------------------------
def noisy_skip(**overrides) -> tuple[DartsSupernet, MixedOp, torch.nn.Module]:
    model = supernet()
    attached("noisy", model, **{"drop_path": 0.0, **overrides}).on_epoch_start(model, 0, 50)
    edge = model.cells[0].edges[0]
    return model, edge, edge.ops[edge.names.index("skip_connect")]


@pytest.mark.parametrize("mean", [0.0, 0.5])
def test_noisy_gaussian_noise_has_the_configured_mean_and_std_and_no_gradient(mean):
    model, _, skip = noisy_skip(mean=mean)
    torch.manual_seed(3)
    x = (3 * torch.randn(64, 4, 8, 8) + 1).requires_grad_()
    model.train()
    out = skip(x)
    z = (out - x).detach()
    assert float(z.mean()) == pytest.approx(mean, abs=0.02)
    assert float(z.std()) == pytest.approx(0.2 * float(x.detach().std()), rel=0.02)  # lambda * std(skip output)
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # no gradient through the noise or its std
    model.eval()
    assert torch.equal(skip(x), x)


def test_noisy_uniform_and_multiplicative_variants():
    torch.manual_seed(4)
    x = torch.randn(64, 4, 8, 8) + 2
    _, _, skip = noisy_skip(distribution="uniform", factor=0.12)
    z = skip(x) - x
    a = math.sqrt(3 * 0.12)  # half-width: variance lambda, not scaled by std(x)
    assert float(z.abs().max()) <= a and float(z.abs().max()) > 0.95 * a
    assert float(z.var()) == pytest.approx(0.12, rel=0.03)
    _, _, skip = noisy_skip(mixture="multiplicative", mean=1.0, factor=0.2)
    r = skip(x) / x
    assert float(r.mean()) == pytest.approx(1.0, abs=0.01) and float(r.std()) == pytest.approx(0.2, rel=0.03)


def test_noisy_touches_only_the_skip_candidate():
    model = supernet()
    edge = model.cells[0].edges[0]
    x = torch.randn(8, 4, 8, 8)
    conv = EdgeMix(F.one_hot(torch.tensor(DARTS_OPS.index("sep_conv_3x3")), len(DARTS_OPS)).float())
    skip = EdgeMix(F.one_hot(torch.tensor(DARTS_OPS.index("skip_connect")), len(DARTS_OPS)).float())
    before = edge(x, conv)
    attached("noisy", model).on_epoch_start(model, 0, 50)
    assert torch.equal(edge(x, conv), before)
    assert not torch.allclose(edge(x, skip), x)


def test_noisy_cosine_decay_and_drop_path():
    model = supernet()
    s = attached("noisy", model, decay=True)
    assert [s.on_epoch_start(model, e, 50)["noisy_decay"] for e in (0, 60, 50, 25)] == pytest.approx([1, 0, 0, 0.5])
    edge = model.cells[0].edges[0]
    assert float(edge.ops[edge.names.index("skip_connect")].decay) == 0.5  # the wrapped skips follow the schedule
    model, _, skip = noisy_skip(factor=0.0, drop_path=0.5)
    torch.manual_seed(5)
    x = torch.ones(4000, 1, 2, 2)
    out = skip(x)
    kept = out[:, 0, 0, 0]
    assert set(kept.unique().tolist()) <= {0.0, 2.0}  # whole samples dropped, the rest scaled by 1/(1-p)
    assert float((kept == 0).float().mean()) == pytest.approx(0.5, abs=0.03)
    model.eval()
    assert torch.equal(skip(x), x)


def test_noisy_refuses_a_space_without_skip():
    with pytest.raises(NasctlError, match="no skip_connect"):
        stabilizer("noisy").configure(supernet(["noise", "sep_conv_3x3"]))


# -- β-DARTS ----------------------------------------------------------------------------------
def test_beta_decay_value_and_gradient_match_hand_computed_numbers():
    model = Supernet({"normal": [["a", "b", "c"]] * 2, "reduce": [["a", "b", "c"]] * 2})
    with torch.no_grad():
        model.alphas["normal"].copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]))
        model.alphas["reduce"].copy_(torch.tensor([[0.0, math.log(2), math.log(3)], [-1.0, -1.0, -1.0]]))
    s = stabilizer("beta_decay", ramp_epochs=100)
    assert s.on_epoch_start(model, 10, 50) == {"beta_decay_lambda": pytest.approx(5.0)}  # 50 * 10 / 100
    rows = [math.log(3), 3 + math.log(1 + math.exp(-1) + math.exp(-2)), math.log(6), -1 + math.log(3)]
    reg = s.arch_loss(model)
    assert float(reg.detach()) == pytest.approx(5.0 * sum(rows) / 4)
    g_normal, g_reduce = torch.autograd.grad(reg, model.arch_parameters())
    e = math.exp(1) + math.exp(2) + math.exp(3)
    assert torch.allclose(g_normal, 5.0 / 4 * torch.tensor([[1 / 3] * 3, [math.exp(k) / e for k in (1, 2, 3)]]))
    assert torch.allclose(g_reduce, 5.0 / 4 * torch.tensor([[1 / 6, 2 / 6, 3 / 6], [1 / 3] * 3]))
    ramp = stabilizer("beta_decay", ramp_epochs=None)
    assert ramp.on_epoch_start(model, 10, 50) == {"beta_decay_lambda": pytest.approx(10.0)}  # 50 * 10 / 50


# -- configs ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("noisy", {"distribution": "gauss"}, "expected one of"),
        ("sdarts_rs", {"epsilon_start": 0.5}, "epsilon_start <= epsilon"),
        ("darts_minus", {"decay_max_epoch": 0}, "decay_start_epoch < decay_max_epoch"),
        ("amended", {"inverse": "neumann"}, "expected one of"),
        ("beta_decay", {"lambda": 3}, "lambda"),
    ],
)
def test_bad_stabilizer_configs_are_clear_errors(name, overrides, message):
    with pytest.raises(NasctlError, match=message):
        stabilizer(name, **overrides)


def test_every_registered_stabilizer_has_a_config_and_composes_in_order():
    names = STABILIZERS.names()
    assert sorted(p.stem for p in (CONF / "stabilizer").glob("*.yaml")) == sorted(names + ["none"])
    model = supernet()
    order = ("darts_minus", "noisy", "beta_decay")
    s = Stabilizers({n: OmegaConf.load(CONF / "stabilizer" / f"{n}.yaml") for n in order})
    assert list(s.members) == list(order)
    s.configure(model)
    assert list(s.on_epoch_start(model, 1, 50)) == ["darts_minus_beta", "noisy_decay", "beta_decay_lambda"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=["stabilizer=[noisy,darts_minus]"])
    assert list(Stabilizers(cfg.stabilizer).members) == ["noisy", "darts_minus"]  # the order given on the command line


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment" / "paper").glob("*.yaml")))
def test_paper_presets_compose_into_valid_configs(preset):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[f"experiment=paper/{preset}"])
    space_config(cfg.space)
    Stabilizers(cfg.stabilizer)


# -- real searches ----------------------------------------------------------------------------
TINY = [*TINY_ANY_SPACE, "dataset.subset=128", "search.epochs=1", "search.steps_per_epoch=1"]
ALL = "[sdarts_adv,darts_minus,noisy,amended,beta_decay]"
FAST_ADV = "stabilizer.sdarts_adv.steps=2"  # combined runs: a shorter attack, same code path
SCALARS = {"sdarts_rs": "sdarts_epsilon", "sdarts_adv": "sdarts_epsilon", "darts_minus": "darts_minus_beta",
           "noisy": "noisy_decay", "beta_decay": "beta_decay_lambda"}
SEARCHES = [
    *[("darts", name, []) for name in ("sdarts_rs", "sdarts_adv", "darts_minus", "noisy", "amended", "beta_decay")],
    ("darts", "[sdarts_rs,beta_decay]", []),
    ("darts", "[darts_minus,amended,beta_decay]", ["search.order=second"]),
    ("darts_nonone", ALL, [FAST_ADV]),
    ("nb201", ALL, [FAST_ADV, "diagnostics.hessian_every=1"]),
    ("s1", ALL, [FAST_ADV]),
    ("s2", ALL, [FAST_ADV]),
    ("s3", ALL, [FAST_ADV]),
    ("s4", "[sdarts_adv,darts_minus,amended,beta_decay]", [FAST_ADV]),  # S4 has no skip_connect for noisy
]


@pytest.mark.slow
@pytest.mark.parametrize("space, stab, extra", SEARCHES, ids=["-".join([s, t, *e]) for s, t, e in SEARCHES])
def test_stabilizers_run_a_real_search(space, stab, extra, fashion, tmp_path):
    if not (CONF / "space" / f"{space}.yaml").is_file():
        pytest.skip(f"conf/space/{space}.yaml does not exist yet")
    size = "space.N=1" if space == "nb201" else "space.layers=3"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[*TINY, size, f"space={space}", f"stabilizer={stab}", *extra])
    run = run_search(cfg, tmp_path / "run", [])
    (record,) = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(record["train_loss"]) and (run.path / "genotype.json").is_file()
    names = stab.strip("[]").split(",")
    assert {SCALARS[n] for n in names if n in SCALARS} <= record.keys()
    if "diagnostics.hessian_every=1" in extra:
        assert math.isfinite(record["hessian_eig"])


# -- every registered stabilizer ----------------------------------------------------------------
@pytest.mark.parametrize("name", STABILIZERS.names())
def test_every_stabilizer_hooks_a_supernet_and_resumes_its_state(name):
    """Built from its conf/ file: configures a supernet, logs float scalars, keeps a finite weight step,
    and a fresh copy loaded with its state_dict gives the same state (what a resume relies on)."""
    model = supernet()
    s = attached(name, model)
    assert all(isinstance(v, float) for v in s.on_epoch_start(model, 1, 4).values())
    b = batches()
    with s.weight_step(model, b, loss_fn(model)):
        assert torch.isfinite(loss_fn(model)(b.x_train, b.y_train))
    fresh = attached(name, supernet())
    fresh.load_state_dict(s.state_dict())
    assert repr(fresh.state_dict()) == repr(s.state_dict())
