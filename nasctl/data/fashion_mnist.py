"""Fashion-MNIST from its IDX files, as Debian's dataset-fashion-mnist or torchvision lays them out."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasctl.data.base import DATASETS, ImageSplit, from_arrays, locate, read, torchvision_fetch

PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An IDX file (maybe gzipped) of ndim-d unsigned bytes: magic 00 00 08 ndim, big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[:4] != bytes([0, 0, 8, ndim]):
        raise ValueError(f"magic {data[:4].hex()} is not that of a {ndim}-d unsigned-byte IDX file")
    dims = np.frombuffer(data, dtype=">i4", count=ndim, offset=4)
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"dims {dims.tolist()} do not match the {body.size} data bytes")
    return body.reshape(dims).copy()


@DATASETS.register("fashion_mnist")
def load(cfg: Any, split: str, device: torch.device) -> ImageSplit:
    root = Path(cfg.root).expanduser()
    names = [f"{PREFIX[split]}-images-idx3-ubyte", f"{PREFIX[split]}-labels-idx1-ubyte"]
    dirs = [root, root / "FashionMNIST" / "raw"]

    images_path, labels_path = locate(
        cfg,
        [[d / (n + ext) for d in dirs for ext in ("", ".gz")] for n in names],
        "Install them with `apt-get install dataset-fashion-mnist` (root /usr/share/datasets/fashion-mnist), "
        "or set dataset.root=DIR, or dataset.download=true (needs internet).",
        torchvision_fetch("FashionMNIST", root, train=split == "train"),
    )
    images = read(cfg, images_path, lambda p: read_idx(p, ndim=3))
    labels = read(cfg, labels_path, lambda p: read_idx(p, ndim=1))
    return read(cfg, labels_path, lambda _: from_arrays(images, labels, (1, *images.shape[1:])))
