"""CIFAR-10 and CIFAR-100 from the pickled batches of their python versions (torchvision's layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nasctl.data.base import DATASETS, ImageSplit, from_arrays, load_pickle, locate, read, torchvision_fetch


@dataclass(frozen=True)
class Cifar:
    """Loader of one CIFAR variant: where it keeps its batches and which key holds the labels."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    torchvision_class: str

    def __call__(self, cfg: Any, split: str, device: torch.device) -> ImageSplit:
        root = Path(cfg.root).expanduser()
        files = self.train_files if split == "train" else self.test_files
        paths = locate(
            cfg,
            [[root / self.folder / f] for f in files],
            f"Set dataset.root=DIR (the directory holding {self.folder}/) or dataset.download=true (needs internet).",
            torchvision_fetch(self.torchvision_class, root, train=split == "train"),
        )
        return ImageSplit.cat([read(cfg, p, self.parse) for p in paths])

    def parse(self, path: Path) -> ImageSplit:
        batch = load_pickle(path)
        return from_arrays(batch["data"], batch[self.label_key], (3, 32, 32))


DATASETS.register("cifar10")(
    Cifar(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        torchvision_class="CIFAR10",
    )
)
DATASETS.register("cifar100")(
    Cifar(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        torchvision_class="CIFAR100",
    )
)
