"""dataset=synthetic: shapes taken from a real dataset or set by hand, drawn from its seed, same batch path."""

from __future__ import annotations

import json

import pytest
import torch

from nasctl.config import SPLIT_IMAGES, AugmentConfig
from nasctl.data import DeviceBatches, load_split
from nasctl.errors import NasctlError
from tests.conftest import TINY_SEARCH, nasctl
from tests.unit.test_data import config


def test_default_is_shaped_like_cifar10():
    cfg = config("synthetic")
    assert (cfg.channels, cfg.size, cfg.num_classes, cfg.train_images, cfg.test_images) == (3, 32, 10, 50_000, 10_000)
    assert list(cfg.mean) == list(config("cifar10").mean) and list(cfg.std) == list(config("cifar10").std)


@pytest.mark.parametrize("name", sorted(SPLIT_IMAGES))
def test_shape_of_takes_the_named_datasets_shape(name):
    cfg, real = config("synthetic", shape_of=name), config(name)
    assert (cfg.channels, cfg.size, cfg.num_classes) == (real.channels, real.size, real.num_classes)
    assert (cfg.train_images, cfg.test_images) == SPLIT_IMAGES[name]


def test_explicit_keys_win_and_the_images_have_that_shape():
    cfg = config("synthetic", shape_of="cifar100", size=12, channels=1, mean=[0.5], std=[0.25], train_images=70,
                 test_images=30)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert train.images.shape == (70, 1, 12, 12) and test.images.shape == (30, 1, 12, 12)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert int(train.labels.max()) < 100 and cfg.num_classes == 100


def test_drawn_from_the_seed_and_the_same_first_images_whatever_the_subset():
    """Blocks are seeded from (seed, split, block): a subset is a prefix of the full split."""
    small = load_split(config("synthetic", subset=700), "train")
    big = load_split(config("synthetic", subset=2500), "train")
    again = load_split(config("synthetic", subset=2500), "train")
    other = load_split(config("synthetic", subset=700, seed=1), "train")
    test = load_split(config("synthetic", test_subset=700), "test")
    assert torch.equal(big.images, again.images) and torch.equal(big.labels, again.labels)
    assert torch.equal(big.images[:700], small.images) and torch.equal(big.labels[:700], small.labels)
    assert not torch.equal(other.images, small.images) and not torch.equal(test.images, small.images)


def test_pixels_and_labels_are_uniform():
    data = load_split(config("synthetic", subset=4000), "train")
    x = data.images.double()
    assert x.mean().item() == pytest.approx(127.5, abs=0.5) and x.std().item() == pytest.approx(73.9, abs=0.5)
    counts = data.labels.bincount(minlength=10)
    assert len(counts) == 10 and counts.min() > 300 and counts.max() < 500  # 400 expected per class


def test_it_goes_through_the_same_augmented_batches_as_real_data():
    cfg = config("synthetic", subset=64)
    batches = DeviceBatches(load_split(cfg, "train"), "cpu", 16, mean=cfg.mean, std=cfg.std,
                            augment=AugmentConfig(crop_padding=4, flip=True, cutout=8), shuffle=True, drop_last=True,
                            seed=0)
    x, y = next(batches.epoch(0))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)
    zero = (torch.zeros(3) - torch.tensor(cfg.mean)) / torch.tensor(cfg.std)  # a padded or cut-out pixel
    assert torch.isclose(x, zero.view(1, 3, 1, 1)).all(1).any()


def test_unknown_shape_of_is_a_user_error():
    with pytest.raises(NasctlError, match="shape_of=imagenet is not one of cifar10"):
        load_split(config("synthetic", shape_of="imagenet"), "train")


@pytest.mark.slow
def test_search_and_retrain_run_on_synthetic_data_and_say_so(tmp_path):
    data = ["dataset=synthetic", "dataset.subset=64", "dataset.test_subset=32"]
    res = nasctl("search", *TINY_SEARCH, *data, f"paths.run_root={tmp_path}/runs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dataset=synthetic: random images, not real data" in res.stderr
    (run,) = (tmp_path / "runs/search").iterdir()
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    res = nasctl("retrain", "experiment=quickstart", *data, "genotype=darts_v2", "retrain.epochs=1",
                 "retrain.steps_per_epoch=1", "retrain.batch_size=16", "retrain.net.C=4", "retrain.net.layers=2",
                 "trainer.progress=false", f"paths.run_root={tmp_path}/runs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dataset=synthetic: random images, not real data (64 x 3x32x32" in res.stderr
