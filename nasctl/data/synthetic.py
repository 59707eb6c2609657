"""`dataset=synthetic`: random uint8 images and labels drawn on the device from the seed, in any shape.

For benchmarks, smoke tests and GPU checks where no files are at hand. The images are drawn in
blocks seeded from (seed, split, block), so the first N images are the same whatever `subset`.
"""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf
from rich.console import Console

from nasctl.config import SPLIT_IMAGES
from nasctl.data.base import DATASETS, ImageSplit
from nasctl.data.batches import derive_seed
from nasctl.errors import NasctlError

BLOCK = 1024  # images per seeded block
SPLITS = {"train": 0, "test": 1}
ANNOUNCED: list[bool] = []


def draw(n: int, shape: tuple[int, int, int], classes: int, seed: int, split: str, device: torch.device) -> ImageSplit:
    """`n` uniform uint8 images of `shape` and uniform labels in [0, classes), made on `device`."""
    blocks = [ImageSplit(torch.empty(0, *shape, dtype=torch.uint8, device=device),
                         torch.empty(0, dtype=torch.long, device=device))]
    generator = torch.Generator(device)
    for block in range(-(-n // BLOCK)):  # whole blocks, then cut: a draw's values depend on its size
        generator.manual_seed(derive_seed(seed, SPLITS[split], block))
        images = torch.randint(0, 256, (BLOCK, *shape), generator=generator, device=device, dtype=torch.uint8)
        blocks.append(ImageSplit(images, torch.randint(0, classes, (BLOCK,), generator=generator, device=device)))
    return ImageSplit.cat(blocks)[:n]


@DATASETS.register("synthetic")
def load(cfg: Any, split: str, device: torch.device) -> ImageSplit:
    shaped = [k for k in ("num_classes", "channels", "size", "mean", "std", "train_images", "test_images")
              if OmegaConf.is_interpolation(cfg, k)]
    if shaped and cfg.shape_of not in SPLIT_IMAGES:
        raise NasctlError(f"dataset.shape_of={cfg.shape_of} is not one of {', '.join(SPLIT_IMAGES)}; pick one, or "
                          f"set dataset.{', dataset.'.join(shaped)} yourself.")
    total = cfg.train_images if split == "train" else cfg.test_images
    keep = cfg.subset if split == "train" else cfg.test_subset
    n = total if keep is None else min(keep, total)
    if split == "train" and not ANNOUNCED:  # once per process (bench builds many loops)
        ANNOUNCED.append(True)
        Console(stderr=True).print(
            f"dataset=synthetic: random images, not real data ({n} x {cfg.channels}x{cfg.size}x{cfg.size}, "
            f"{cfg.num_classes} classes, shaped like {cfg.shape_of or 'the keys set'}, seed {cfg.seed})",
            highlight=False, soft_wrap=True,
        )
    return draw(n, (cfg.channels, cfg.size, cfg.size), cfg.num_classes, cfg.seed, split, device)
