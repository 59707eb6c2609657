"""Dataset loaders on tiny files written in each real on-disk format, configs, and the batch iterators."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from omegaconf import OmegaConf
from PIL import Image

from nasctl.config import AugmentConfig, DatasetConfig
from nasctl.data import DATASETS, DeviceBatches, HostBatches, ImageSplit, load_folder_split, load_split
from nasctl.errors import NasctlError

CONF = Path(__file__).parents[2] / "conf" / "dataset"
NAMES = ["fashion_mnist", "cifar10", "cifar100", "svhn", "imagenet16_120", "imagenet"]
FMNIST = Path("/usr/share/datasets/fashion-mnist")


def config(dataset: str, root: Path | str | None = None, **overrides):
    """conf/dataset/<dataset>.yaml merged into the DatasetConfig schema, with root and other fields overridden."""
    node = OmegaConf.load(CONF / f"{dataset}.yaml")
    paths = OmegaConf.load(CONF.parent / "paths" / "default.yaml")  # a dataset's root sits under paths.data
    node.root = OmegaConf.create({"paths": paths, "root": OmegaConf.to_container(node)["root"]}).root
    cfg = OmegaConf.merge(OmegaConf.structured(DatasetConfig), node, overrides)
    if root is not None:
        cfg.root = str(root)
    return cfg


def pixels(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: 00 00 08 <ndim>, big-endian int32 dims, then the bytes; gzipped if path ends in .gz."""
    data = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes() + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as f:
        f.write(data)


def write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_fashion_mnist(root: Path, n: int = 12, torchvision_layout: bool = False) -> dict[str, np.ndarray]:
    folder, ext = (root / "FashionMNIST" / "raw", "") if torchvision_layout else (root, ".gz")
    arrays = {"train": (pixels(n, (28, 28)), np.arange(n, dtype=np.uint8) % 10)}
    arrays["test"] = (pixels(n // 2, (28, 28), seed=1), np.arange(n // 2, dtype=np.uint8) % 10)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", arrays[split][0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", arrays[split][1])
    return arrays


def write_svhn(root: Path, split: str, n: int = 10) -> np.ndarray:
    x = pixels(n, (32, 32, 3)).transpose(1, 2, 3, 0)  # (32, 32, 3, N) as in the .mat files
    root.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(root / f"{split}_32x32.mat", {"X": x, "y": (np.arange(n) % 10 + 1)[:, None]})
    return x


# --- configs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_config_files_fit_the_schema(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NASCTL_DATA", "/datasets")
    cfg = config(name)
    assert cfg.name == name and name in DATASETS.names()
    assert len(cfg.mean) == len(cfg.std) == cfg.channels and cfg.download is False
    assert cfg.subset is None and cfg.test_subset is None
    assert cfg.root == (str(FMNIST) if name == "fashion_mnist" else f"/datasets/{name}")


def test_default_data_root_and_imagenet16_stats(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NASCTL_DATA", raising=False)
    cfg = config("imagenet16_120")
    assert cfg.root == "data/imagenet16_120"
    np.testing.assert_allclose(cfg.mean, [x / 255 for x in [122.68, 116.66, 104.01]], atol=1e-8)
    np.testing.assert_allclose(cfg.std, [x / 255 for x in [63.22, 61.26, 65.09]], atol=1e-8)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(NasctlError, match="cifar10"):
        load_split(config("cifar10", name="mnist"), "train")


# --- loaders -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("torchvision_layout", [False, True])
def test_fashion_mnist_idx(tmp_path: Path, torchvision_layout: bool):
    arrays = write_fashion_mnist(tmp_path, torchvision_layout=torchvision_layout)
    for split in ("train", "test"):
        data = load_split(config("fashion_mnist", tmp_path), split)
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert data.images.shape == (len(arrays[split][0]), 1, 28, 28) and data.images.is_contiguous()
        assert np.array_equal(data.images[:, 0].numpy(), arrays[split][0])
        assert np.array_equal(data.labels.numpy(), arrays[split][1])


@pytest.mark.skipif(not (FMNIST / "train-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real_files_match_the_config():
    cfg = config("fashion_mnist")
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels.bincount().tolist() == [6000] * 10
    x = train.images.float() / 255
    assert x.mean().item() == pytest.approx(cfg.mean[0], abs=1e-4)
    assert x.std().item() == pytest.approx(cfg.std[0], abs=1e-4)


@pytest.mark.parametrize(
    ("name", "folder", "files", "label_key"),
    [
        ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"),
        ("cifar100", "cifar-100-python", ["train", "test"], b"fine_labels"),
    ],
)
def test_cifar_pickled_batches(tmp_path: Path, name: str, folder: str, files: list[str], label_key: bytes):
    """The last file is the test split; the others are concatenated in order for the training split."""
    parts = []
    for i, f in enumerate(files):
        data, labels = pixels(3, (3072,), seed=i), [i, i + 1, i + 2]
        write_pickle(tmp_path / folder / f, {b"data": data, label_key: labels, b"batch_label": b"x"})
        parts.append((data, labels))
    train, test = load_split(config(name, tmp_path), "train"), load_split(config(name, tmp_path), "test")
    assert train.images.shape == (3 * len(files) - 3, 3, 32, 32) and test.images.shape == (3, 3, 32, 32)
    assert np.array_equal(train.images.reshape(len(train), -1).numpy(), np.concatenate([d for d, _ in parts[:-1]]))
    assert np.array_equal(train.images[0, 1].numpy(), parts[0][0][0, 1024:2048].reshape(32, 32))  # G plane
    assert train.labels.tolist() == [label for _, labels in parts[:-1] for label in labels]
    assert test.labels.tolist() == parts[-1][1]


def test_svhn_mat_files(tmp_path: Path):
    x = write_svhn(tmp_path, "train")
    data = load_split(config("svhn", tmp_path), "train")
    assert data.images.shape == (10, 3, 32, 32) and data.images.is_contiguous()
    assert np.array_equal(data.images[2, 1].numpy(), x[:, :, 1, 2])
    assert data.labels.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]  # label 10 is the digit 0


def test_imagenet16_keeps_the_first_120_classes_zero_based(tmp_path: Path):
    labels = {f"train_data_batch_{i}": [1, 500, 120, i] for i in range(1, 11)}
    labels["val_data"] = [121, 7, 1000, 120]
    for f, lab in labels.items():
        write_pickle(tmp_path / f, {"data": pixels(4, (768,), seed=lab[-1]), "labels": lab, "mean": np.zeros(768)})
    train = load_split(config("imagenet16_120", tmp_path), "train")
    assert train.labels.tolist() == [label for i in range(1, 11) for label in (0, 119, i - 1)]
    assert train.images.shape == (30, 3, 16, 16)
    assert np.array_equal(train.images[1].reshape(-1).numpy(), pixels(4, (768,), seed=1)[2])
    test = load_split(config("imagenet16_120", tmp_path), "test")
    assert test.labels.tolist() == [6, 119]


def test_subsets_keep_the_first_images_and_halves_split_like_darts(tmp_path: Path):
    arrays = write_fashion_mnist(tmp_path, n=12)
    cfg = config("fashion_mnist", tmp_path, subset=5, test_subset=2)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert len(train) == 5 and len(test) == 2
    assert np.array_equal(train.images[:, 0].numpy(), arrays["train"][0][:5])
    first, rest = train.halves(0.5)
    assert (len(first), len(rest)) == (2, 3) and torch.equal(rest.labels, train.labels[2:])
    assert isinstance(first, ImageSplit) and first.images.is_contiguous()


def test_config_that_does_not_fit_the_files(tmp_path: Path):
    write_fashion_mnist(tmp_path)
    with pytest.raises(NasctlError, match="size=32"):
        load_split(config("fashion_mnist", tmp_path, size=32), "train")
    with pytest.raises(NasctlError, match="num_classes=5"):
        load_split(config("fashion_mnist", tmp_path, num_classes=5), "train")


# --- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fashion_mnist", ["train-images-idx3-ubyte.gz", "FashionMNIST/raw", "apt-get install dataset-fashion-mnist"]),
        ("cifar10", ["cifar-10-batches-py/data_batch_1", "cifar-10-batches-py/data_batch_5", "download=true"]),
        ("cifar100", ["cifar-100-python/train", "download=true"]),
        ("svhn", ["train_32x32.mat", "download=true"]),
        ("imagenet16_120", ["train_data_batch_10", "no automatic download"]),
    ],
)
def test_missing_files_name_the_paths_and_how_to_get_them(tmp_path: Path, name: str, expected: list[str]):
    with pytest.raises(NasctlError) as err:
        load_split(config(name, tmp_path / "nowhere"), "train")
    message = str(err.value)
    assert name in message and str(tmp_path / "nowhere") in message and "dataset.root=" in message
    for text in expected:
        assert text in message


def test_download_fetches_with_torchvision_then_loads_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets

    calls = []

    def fake_svhn(root: str, split: str, download: bool) -> None:
        calls.append((root, split, download))
        write_svhn(Path(root), split)

    monkeypatch.setattr(torchvision.datasets, "SVHN", fake_svhn)
    assert len(load_split(config("svhn", tmp_path, download=True), "test")) == 10
    assert calls == [(str(tmp_path), "test", True)]


def test_failed_download_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(NasctlError, match="Downloading dataset cifar10 .* failed: network is unreachable"):
        load_split(config("cifar10", tmp_path, download=True), "train")


@pytest.mark.parametrize(
    ("corrupt", "relative"),
    [
        (lambda p: p.write_bytes(b"not gzip at all"), "train-images-idx3-ubyte.gz"),
        (lambda p: write_idx(p, np.zeros((3, 28), np.uint8)), "train-images-idx3-ubyte.gz"),  # 2-d, not 3-d
        (lambda p: p.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 99, 1, 2]))), "train-labels-idx1-ubyte.gz"),
    ],
)
def test_malformed_idx_names_the_file(tmp_path: Path, corrupt, relative: str):
    write_fashion_mnist(tmp_path)
    corrupt(tmp_path / relative)
    with pytest.raises(NasctlError, match=f"cannot read {tmp_path / relative}"):
        load_split(config("fashion_mnist", tmp_path), "train")


def test_mismatched_counts_and_bad_pickles_name_the_file(tmp_path: Path):
    write_fashion_mnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(NasctlError, match="train-labels-idx1-ubyte.gz .*12 integer labels"):
        load_split(config("fashion_mnist", tmp_path), "train")
    folder = tmp_path / "cifar-100-python"
    write_pickle(folder / "test", {b"data": pixels(2, (100,)), b"fine_labels": [0, 1]})
    with pytest.raises(NasctlError, match=f"cannot read {folder / 'test'}"):
        load_split(config("cifar100", tmp_path), "test")
    (folder / "test").write_bytes(pickle.dumps({b"data": 1})[:-3])
    with pytest.raises(NasctlError, match="truncated"):
        load_split(config("cifar100", tmp_path), "test")


# --- DeviceBatches -------------------------------------------------------------------------------------------


def numbered(n: int = 50) -> ImageSplit:
    """Images whose every pixel holds the image's index (mod 256), so a batch shows which images it took."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()
    return ImageSplit(images, torch.arange(n))


def batches(split: ImageSplit, augment=None, **kwargs) -> DeviceBatches:
    options = {"shuffle": True, "drop_last": False, "seed": 0, **kwargs}
    return DeviceBatches(split, "cpu", 16, mean=[0.5] * 3, std=[0.25] * 3, augment=augment, **options)


def test_batch_counts():
    assert len(batches(numbered(50))) == 4 and len(batches(numbered(48))) == 3
    assert len(batches(numbered(50), drop_last=True)) == 3
    sizes = [len(y) for _, y in batches(numbered(50)).epoch(0)]
    assert sizes == [16, 16, 16, 2]


def test_unshuffled_batches_are_the_normalised_split_in_order():
    split = ImageSplit(torch.from_numpy(pixels(40, (3, 8, 8))), torch.arange(40))
    xs, ys = zip(*batches(split, shuffle=False).epoch(0))
    assert torch.equal(torch.cat(ys), split.labels)
    expected = (split.images.float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(torch.cat(xs), expected, rtol=0, atol=1e-6)
    assert xs[0].dtype == torch.float32 and ys[0].dtype == torch.int64


def test_each_epoch_is_a_fresh_permutation_fixed_by_the_seed():
    loader = batches(numbered(50))
    orders = [torch.cat([y for _, y in loader.epoch(e)]) for e in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(50))
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert torch.equal(orders[1], torch.cat([y for _, y in batches(numbered(50)).epoch(1)]))
    assert not torch.equal(orders[1], torch.cat([y for _, y in batches(numbered(50), seed=1).epoch(1)]))


def test_images_follow_their_labels_through_the_shuffle():
    x, y = next(batches(numbered(50)).epoch(4))
    assert torch.equal(((x[:, :, 0, 0] * 0.25 + 0.5) * 255).round().long(), y[:, None].expand(-1, 3))


def test_resume_mid_epoch_reproduces_the_same_augmented_batches():
    split = ImageSplit(torch.from_numpy(pixels(70, (3, 8, 8))), torch.arange(70))
    aug = AugmentConfig(crop_padding=2, flip=True, cutout=4)
    full = list(batches(split, aug, seed=7).epoch(3))
    resumed = list(batches(split, aug, seed=7).epoch(3, start_step=2))  # a new object: no state carried over
    assert len(resumed) == len(full) - 2
    for (x1, y1), (x2, y2) in zip(full[2:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_epoch = list(batches(split, aug, seed=7).epoch(4))
    assert not torch.equal(full[0][0], other_epoch[0][0])


def test_augmentation_differs_between_steps_but_not_between_runs():
    split = ImageSplit(torch.full((32, 3, 8, 8), 200, dtype=torch.uint8), torch.zeros(32, dtype=torch.long))
    aug = AugmentConfig(crop_padding=3, flip=True, cutout=0)
    (a, _), (b, _) = batches(split, aug, shuffle=False).epoch(0)
    assert not torch.equal(a, b)  # same images, different crops
    (c, _), _ = batches(split, aug, shuffle=False).epoch(0)
    assert torch.equal(a, c)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_batches_are_deterministic_and_never_sync():
    split = ImageSplit(torch.from_numpy(pixels(256, (3, 32, 32))), torch.arange(256))
    aug = AugmentConfig(crop_padding=4, flip=True, cutout=16)

    def make() -> DeviceBatches:
        options = {"augment": aug, "shuffle": True, "drop_last": True, "seed": 0}
        return DeviceBatches(split, "cuda", 64, mean=[0.5] * 3, std=[0.25] * 3, **options)

    it = make().epoch(0)
    first = [next(it)]  # the epoch's permutation is copied to the device once, here
    torch.cuda.set_sync_debug_mode("error")
    try:
        rest = list(it)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(x.is_cuda and y.is_cuda for x, y in first + rest)
    for (x1, y1), (x2, y2) in zip(first + rest, make().epoch(0)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# --- ImageNet: ImageFolder + HostBatches ---------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A tiny ImageNet-layout tree: 2 classes x 3 PNGs in train/, 2 classes x 1 in val/."""
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 3), ("val", 1)):
        for cls in ("n01440764", "n01443537"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(per_class):
                pixels_hwc = rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels_hwc).save(tmp_path / split / cls / f"{i}.png")
    return tmp_path


def test_imagenet_is_not_loaded_into_memory(image_folder: Path):
    with pytest.raises(NasctlError, match="HostBatches"):
        load_split(config("imagenet", image_folder), "train")


def test_imagenet_folder_split_with_host_batches(image_folder: Path):
    cfg = config("imagenet", image_folder, size=16, num_classes=2)
    train, test = load_folder_split(cfg, "train"), load_folder_split(cfg, "test")
    assert (len(train), len(test)) == (6, 2)
    x, y = test[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and y == 0
    loader = HostBatches(train, "cpu", 4, shuffle=True, drop_last=False, seed=0, num_workers=0)
    epoch = list(loader.epoch(0))
    assert len(loader) == 2 and [len(y) for _, y in epoch] == [4, 2]
    assert (
        epoch[0][0].shape == (4, 3, 16, 16) and sorted(torch.cat([y for _, y in epoch]).tolist()) == [0] * 3 + [1] * 3
    )
    (x_resumed, y_resumed), *_ = loader.epoch(0, start_step=1)
    assert torch.equal(x_resumed, epoch[1][0]) and torch.equal(y_resumed, epoch[1][1])
    torch.manual_seed(123)  # the global RNG neither drives nor is disturbed by the transforms
    state = torch.get_rng_state()
    again = list(loader.epoch(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(epoch, again))
    assert len(load_folder_split(config("imagenet", image_folder, size=16, subset=4), "train")) == 4


def test_host_batches_do_not_depend_on_the_number_of_workers(image_folder: Path):
    train = load_folder_split(config("imagenet", image_folder, size=16, num_classes=2), "train")

    def batches_of(workers: int) -> list:
        return list(HostBatches(train, "cpu", 3, shuffle=True, drop_last=True, seed=5, num_workers=workers).epoch(2))

    for (x0, y0), (x2, y2) in zip(batches_of(0), batches_of(2)):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_imagenet_folder_errors(image_folder: Path):
    with pytest.raises(NasctlError, match=r"looked for .*nowhere/val.*cannot be downloaded"):
        load_folder_split(config("imagenet", image_folder / "nowhere"), "test")
    with pytest.raises(NasctlError, match="2 class folders .* num_classes=1"):
        load_folder_split(config("imagenet", image_folder, num_classes=1), "train")
