"""Batched on-device augmentation with torchvision's semantics: crop, flip, normalise, then DARTS's Cutout."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def crop_flip(images: Tensor, padding: int, top: Tensor, left: Tensor, flip: Tensor) -> Tensor:
    """RandomCrop(size, padding) then RandomHorizontalFlip, given each image's offsets (in [0, 2p]) and flip."""
    n, c, h, w = images.shape
    arange = partial(torch.arange, device=images.device)
    rows = top[:, None] + arange(h)
    cols = left[:, None] + torch.where(flip[:, None], w - 1 - arange(w), arange(w))
    padded = F.pad(images, (padding,) * 4)
    return padded[
        arange(n)[:, None, None, None], arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]
    ]


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 -> float in [0, 1] (as ToTensor), then (x - mean) / std (as Normalize); mean, std are (1, C, 1, 1)."""
    return images.float().div_(255).sub_(mean).div_(std)


def cutout(images: Tensor, length: int, cy: Tensor, cx: Tensor) -> Tensor:
    """Zero rows [cy - length//2, cy + length//2) x columns likewise around cx, clipped, in all channels (DARTS)."""
    h, w = images.shape[-2:]
    half = length // 2
    rows = torch.arange(h, device=images.device)
    cols = torch.arange(w, device=images.device)
    in_rows = (rows >= cy[:, None] - half) & (rows < cy[:, None] + half)
    in_cols = (cols >= cx[:, None] - half) & (cols < cx[:, None] + half)
    return images.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], 0.0)


def augment(images: Tensor, cfg: Any, mean: Tensor, std: Tensor, generator: torch.Generator) -> Tensor:
    """Augment (per cfg, an AugmentConfig) and normalise a uint8 batch, drawing all randomness from `generator`."""
    n, _, h, w = images.shape
    device = images.device
    if cfg.crop_padding or cfg.flip:
        top, left = torch.randint(0, 2 * cfg.crop_padding + 1, (2, n), generator=generator, device=device)
        if cfg.flip:
            flip = torch.rand(n, generator=generator, device=device) < 0.5
        else:
            flip = torch.zeros(n, dtype=torch.bool, device=device)
        images = crop_flip(images, cfg.crop_padding, top, left, flip)
    x = normalize(images, mean, std)
    if cfg.cutout:
        cy, cx = (torch.randint(0, k, (n,), generator=generator, device=device) for k in (h, w))
        x = cutout(x, cfg.cutout, cy, cx)
    return x
