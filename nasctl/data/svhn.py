"""SVHN (cropped digits) from torchvision's train_32x32.mat / test_32x32.mat."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.io
import torch

from nasctl.data.base import DATASETS, ImageSplit, from_arrays, locate, read, torchvision_fetch


def parse(path: Path) -> ImageSplit:
    """X is (32, 32, 3, N) in H, W, C, N order; y is (N, 1) with 10 standing for the digit 0."""
    mat = scipy.io.loadmat(path)
    labels = np.asarray(mat["y"]).reshape(-1).astype(np.int64) % 10
    return from_arrays(np.asarray(mat["X"]).transpose(3, 2, 0, 1), labels, (3, 32, 32))


@DATASETS.register("svhn")
def load(cfg: Any, split: str, device: torch.device) -> ImageSplit:
    root = Path(cfg.root).expanduser()
    (path,) = locate(
        cfg,
        [[root / f"{split}_32x32.mat"]],
        "Set dataset.root=DIR (the directory holding it) or dataset.download=true (needs internet).",
        torchvision_fetch("SVHN", root, split=split),
    )
    return read(cfg, path, parse)
