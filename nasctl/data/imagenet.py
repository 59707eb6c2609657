"""ImageNet from an ImageFolder tree (root/train/<class>/*, root/val/<class>/*), read from disk per batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from nasctl.data.base import DATASETS, ImageSplit, locate, read
from nasctl.errors import NasctlError

FOLDERS = {"train": "train", "test": "val"}


@DATASETS.register("imagenet")
def load(cfg: Any, split: str, device: torch.device) -> ImageSplit:
    raise NasctlError(
        f"Dataset {cfg.name} does not fit in memory as one tensor; load it with "
        "load_folder_split() and iterate it with HostBatches."
    )


def transforms(cfg: Any, split: str) -> Any:
    """DARTS's ImageNet transforms: random-resized crop, flip and colour jitter to train; resize + centre crop to test."""
    from torchvision.transforms import v2  # imported here: it adds seconds to every CLI start

    if split == "train":
        augment = [
            v2.RandomResizedCrop(cfg.size),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
        ]
    else:
        augment = [v2.Resize(cfg.size * 8 // 7), v2.CenterCrop(cfg.size)]  # 256 then 224
    return v2.Compose(
        [*augment, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(cfg.mean), list(cfg.std))]
    )


def load_folder_split(cfg: Any, split: str) -> Dataset:
    """An ImageFolder of split "train" (root/train) or "test" (root/val) with the DARTS transforms, subset applied."""
    from torchvision.datasets import ImageFolder

    root = Path(cfg.root).expanduser()
    (folder,) = locate(
        cfg,
        [[root / FOLDERS[split]]],
        "Set dataset.root=DIR, the directory holding train/<class>/*.JPEG and val/<class>/* "
        "(ImageNet cannot be downloaded automatically).",
    )
    data = read(cfg, folder, lambda p: ImageFolder(str(p), transform=transforms(cfg, split)))
    if len(data.classes) > cfg.num_classes:
        raise NasctlError(
            f"Dataset {cfg.name}: {folder} has {len(data.classes)} class folders but the config says "
            f"num_classes={cfg.num_classes}; fix dataset.num_classes."
        )
    keep = cfg.subset if split == "train" else cfg.test_subset
    return data if keep is None else Subset(data, range(min(keep, len(data))))
