"""The seams of the search loop on a real SearchLoop: step order, batches, learning rate, the validation seed stream."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import nasctl
import nasctl.entry  # noqa: F401  (registers the schemas and resolvers of conf/search.yaml)
from nasctl.data import DeviceBatches, load_split
from nasctl.search.stage import SearchLoop
from nasctl.store import Run
from nasctl.train import Trainer, seed_everything
from tests.conftest import TINY_SEARCH

CONF = nasctl.conf_dir()


def search_loop(tmp_path, *overrides: str) -> SearchLoop:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("search", overrides=[*TINY_SEARCH, "search.epochs=4", *overrides])
    seed_everything(cfg.seed)
    run = Run.create(tmp_path / "run", "search", cfg.seed, [], cfg)
    return SearchLoop(cfg, Trainer(cfg.trainer, run), run)


def test_one_step_is_the_arch_step_on_the_val_batch_then_the_weight_step_on_the_train_batch(fashion, tmp_path):
    loop = search_loop(tmp_path, "search.arch_lr=0.05")  # alpha moves enough for the weight gradient to see it
    (x_tr, y_tr), (x_val, y_val) = batch = next(iter(loop.batches(1, 0)))
    s, ref = loop.cfg.search, copy.deepcopy(loop.model)
    ref.train()
    alphas, weights = ref.arch_parameters(), ref.weight_parameters()
    g_alpha = torch.autograd.grad(F.cross_entropy(ref(x_val), y_val), alphas, materialize_grads=True)
    for a, g in zip(alphas, g_alpha):
        a.grad = g
    torch.optim.Adam(alphas, lr=s.arch_lr, betas=tuple(s.arch_betas), weight_decay=s.arch_weight_decay).step()
    g_w = torch.autograd.grad(F.cross_entropy(ref(x_tr), y_tr), weights, materialize_grads=True)  # at the new alpha
    scale = min(1.0, s.grad_clip / float(torch.cat([g.flatten() for g in g_w]).norm()))
    loop.step(batch, 1, 0)
    assert all(torch.allclose(a.grad, g, rtol=1e-5, atol=1e-9) for a, g in zip(loop.model.arch_parameters(), g_alpha))
    assert all(torch.allclose(a, r) for a, r in zip(loop.model.arch_parameters(), alphas))
    assert all(torch.allclose(w.grad, scale * g, rtol=1e-4, atol=1e-9) for w, g in zip(loop.weights, g_w))


@pytest.mark.slow
@pytest.mark.parametrize("order", ["first", "second"])
def test_epoch_e_trains_at_the_closed_form_cosine_lr_in_both_steps(fashion, tmp_path, order):
    loop = search_loop(tmp_path, f"search.order={order}")
    seen: dict[str, list[float]] = {"xi": [], "sgd": []}
    arch_step, w_step = loop.architect.step, loop.w_opt.step
    loop.architect.step = lambda b, xi: (seen["xi"].append(xi), arch_step(b, xi))[1]
    loop.w_opt.step = lambda: (seen["sgd"].append(loop.w_opt.param_groups[0]["lr"]), w_step())[1]
    for epoch in range(4):
        loop.step(next(iter(loop.batches(epoch, 0))), epoch, 0)
    # 0.001 + 0.024 (1 + cos(pi e / 4)) / 2: epoch e at xi_e (DARTS on PyTorch 0.3.1, DM, RD)
    want = [0.025, 0.001 + 0.012 * (1 + 2**-0.5), 0.013, 0.001 + 0.012 * (1 - 2**-0.5)]
    assert seen["xi"] == pytest.approx(want, abs=1e-12) and seen["sgd"] == pytest.approx(want, abs=1e-12)


def test_the_validation_half_draws_order_and_crops_from_its_own_seed_stream(fashion, tmp_path):
    loop = search_loop(tmp_path, "dataset.subset=64", "search.batch_size=32")  # equal halves of 32
    cfg = loop.cfg
    _, val = load_split(cfg.dataset, "train").halves(cfg.search.train_portion)
    paired = DeviceBatches(val, "cpu", 32, mean=cfg.dataset.mean, std=cfg.dataset.std, augment=cfg.search.augment,
                           shuffle=True, drop_last=True, seed=cfg.seed)  # the training half's seed
    (x_tr, _), = loop.train_batches.epoch(0)
    (x_val, y_val), = loop.val_batches.epoch(0)
    (x_paired, y_paired), = paired.epoch(0)
    assert not torch.equal(y_val, y_paired) and not torch.equal(x_val, x_paired)
    again = search_loop(tmp_path / "again", "dataset.subset=64", "search.batch_size=32")
    (x_again, _), = again.val_batches.epoch(0)
    assert torch.equal(x_val, x_again)  # still a pure function of the seed: resume sees the same batches
