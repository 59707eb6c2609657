"""In-memory image splits, the dataset registry, and the helpers every loader shares."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from nasctl.errors import NasctlError
from nasctl.registry import Registry

T = TypeVar("T")


@dataclass
class ImageSplit:
    """A whole split in memory: uint8 images (N, C, H, W) and int64 labels (N,), on the CPU (synthetic: the device)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: slice) -> ImageSplit:
        return ImageSplit(self.images[index], self.labels[index])

    def halves(self, portion: float) -> tuple[ImageSplit, ImageSplit]:
        """The first int(portion * N) images and the rest, as DARTS splits its training set."""
        cut = int(portion * len(self))
        return self[:cut], self[cut:]

    @staticmethod
    def cat(parts: Sequence[ImageSplit]) -> ImageSplit:
        return ImageSplit(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]))


# A loader takes (cfg, split, device) and returns the whole split; files are read to the CPU whatever
# the device, synthetic data is drawn on it. load_split applies the subsets.
Loader = Callable[[Any, str, torch.device], ImageSplit]
DATASETS: Registry[Loader] = Registry("dataset")


def load_split(cfg: Any, split: str, device: torch.device | str = "cpu") -> ImageSplit:
    """Load split "train" or "test" of dataset cfg.name, keeping the first cfg.subset / cfg.test_subset."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    data = DATASETS.get(cfg.name)(cfg, split, torch.device(device))
    shape = (cfg.channels, cfg.size, cfg.size)
    if tuple(data.images.shape[1:]) != shape:
        raise NasctlError(
            f"Dataset {cfg.name} holds images of shape {tuple(data.images.shape[1:])} but the config "
            f"says channels={cfg.channels}, size={cfg.size}; fix dataset.channels / dataset.size."
        )
    if len(data) and int(data.labels.max()) >= cfg.num_classes:
        raise NasctlError(
            f"Dataset {cfg.name} has label {int(data.labels.max())} but the config says "
            f"num_classes={cfg.num_classes}; fix dataset.num_classes."
        )
    keep = cfg.subset if split == "train" else cfg.test_subset
    return data if keep is None else data[:keep]


def locate(cfg: Any, wanted: list[list[Path]], hint: str, fetch: Callable[[], Any] | None = None) -> list[Path]:
    """The first existing path of each list of alternatives; with cfg.download, run `fetch` if any is missing."""

    def missing() -> list[list[Path]]:
        return [alts for alts in wanted if not any(p.exists() for p in alts)]

    if missing() and cfg.download and fetch is not None:
        try:
            fetch()
        except Exception as exc:  # noqa: BLE001  (torchvision raises URLError, RuntimeError, OSError...)
            raise NasctlError(f"Downloading dataset {cfg.name} into {cfg.root} failed: {exc}") from None
    if lost := missing():
        looked = "; ".join(" or ".join(map(str, alts)) for alts in lost)
        raise NasctlError(f"Dataset {cfg.name} not found: looked for {looked}. {hint}")
    return [next(p for p in alts if p.exists()) for alts in wanted]


def read(cfg: Any, path: Path, parse: Callable[[Path], T]) -> T:
    """parse(path), turning any failure into a NasctlError that names the file."""
    try:
        return parse(path)
    except Exception as exc:  # noqa: BLE001  (numpy, pickle, gzip, scipy each raise their own)
        raise NasctlError(
            f"Dataset {cfg.name}: cannot read {path} ({type(exc).__name__}: {exc}). The file is "
            "truncated or not in the expected format; delete it and fetch it again."
        ) from None


def load_pickle(path: Path) -> dict[str, Any]:
    """A pickled dict (Python 2 or 3, str or bytes keys) with str keys."""
    with open(path, "rb") as f:
        obj = pickle.load(f, encoding="bytes")
    if not isinstance(obj, dict):
        raise TypeError(f"expected a pickled dict, found {type(obj).__name__}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def from_arrays(images: Any, labels: Any, shape: tuple[int, int, int]) -> ImageSplit:
    """An ImageSplit from uint8 images (flat or shaped) and integer labels; ValueError if they do not fit."""
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.dtype != np.uint8 or images.size != len(images) * int(np.prod(shape)):
        raise ValueError(f"expected uint8 images of {shape}, found {images.dtype} {images.shape}")
    if len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"expected {len(images)} integer labels, found {labels.dtype} {labels.shape}")
    images = np.ascontiguousarray(images.reshape(-1, *shape))
    return ImageSplit(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def torchvision_fetch(class_name: str, root: Path, **kwargs: Any) -> Callable[[], Any]:
    """A `fetch` for locate() that downloads with torchvision.datasets.<class_name>(root, download=True)."""

    def fetch() -> Any:
        import torchvision.datasets  # imported here: it adds seconds to every CLI start

        return getattr(torchvision.datasets, class_name)(str(root), download=True, **kwargs)

    return fetch
