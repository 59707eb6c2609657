"""ImageNet16-120 (NAS-Bench-201): the 16x16 downsampled ImageNet pickles, first 120 classes only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from nasctl.data.base import DATASETS, ImageSplit, from_arrays, load_pickle, locate, read

CLASSES = 120
FILES = {"train": [f"train_data_batch_{i}" for i in range(1, 11)], "test": ["val_data"]}


def parse(path: Path) -> ImageSplit:
    """'data' is uint8 (N, 768), channel-planar 3x16x16; 'labels' are 1-based ImageNet classes."""
    batch = load_pickle(path)
    labels = np.asarray(batch["labels"]).reshape(-1)
    keep = labels <= CLASSES
    return from_arrays(np.asarray(batch["data"])[keep], labels[keep] - 1, (3, 16, 16))


@DATASETS.register("imagenet16_120")
def load(cfg: Any, split: str, device: torch.device) -> ImageSplit:
    root = Path(cfg.root).expanduser()
    paths = locate(
        cfg,
        [[root / f] for f in FILES[split]],
        "Get the downsampled ImageNet 16x16 pickles (Imagenet16_train.zip / Imagenet16_val.zip from "
        "image-net.org, as NAS-Bench-201 uses them) and set dataset.root=DIR; there is no automatic download.",
    )
    return ImageSplit.cat([read(cfg, p, parse) for p in paths])
