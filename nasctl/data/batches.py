"""Epoch iterators whose order and augmentation are a pure function of (seed, epoch, step).

Nothing random is carried from batch to batch, so a run resumed at (epoch, step) sees exactly the
batches the interrupted run would have seen, without saving any RNG state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from nasctl.data.augment import augment, normalize
from nasctl.data.base import ImageSplit

# Independent seed streams, so that e.g. the permutation of epoch 1 never reuses step 1's draws;
# VALIDATION_HALF seeds the search's validation half apart from its training half.
PERMUTATION, AUGMENT, SAMPLE, WORKERS, VALIDATION_HALF = range(5)


def derive_seed(*parts: int) -> int:
    """A well-mixed 64-bit seed from non-negative integers (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence(parts).generate_state(1, np.uint64)[0])


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> Tensor:
    """The CPU index order of one epoch: a permutation seeded from (seed, epoch), or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(derive_seed(seed, PERMUTATION, epoch))
    return torch.randperm(n, generator=generator)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class DeviceBatches:
    """A whole split as one uint8 tensor on the device; batches are augmented and normalised there."""

    def __init__(
        self,
        split: ImageSplit,
        device: torch.device | str,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: Any | None,
        shuffle: bool,
        drop_last: bool,
        seed: int,
    ) -> None:
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.mean = torch.tensor([float(m) for m in mean], device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor([float(s) for s in std], device=self.device).view(1, -1, 1, 1)
        self.augment, self.batch_size = augment, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.generator = torch.Generator(self.device)

    def __len__(self) -> int:
        return num_batches(len(self.labels), self.batch_size, self.drop_last)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (normalised float images, int64 labels) on the device, from batch `start_step` on."""
        order = epoch_order(len(self.labels), self.seed, epoch, self.shuffle).to(self.device)
        for step in range(start_step, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images = self.images[index]
            if self.augment is None:
                x = normalize(images, self.mean, self.std)
            else:
                self.generator.manual_seed(derive_seed(self.seed, AUGMENT, epoch, step))
                x = augment(images, self.augment, self.mean, self.std, self.generator)
            yield x, self.labels[index]


class SeededSamples(Dataset):
    """Position i of an epoch: dataset[order[i]], its transform's torch RNG seeded from (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, order: Tensor, seed: int, epoch: int) -> None:
        self.dataset, self.order, self.seed, self.epoch = dataset, order, seed, epoch

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self.seed, SAMPLE, self.epoch, position))
            return self.dataset[int(self.order[position])]


class HostBatches:
    """A torch Dataset decoded and transformed by DataLoader workers; the same epoch()/len() as DeviceBatches."""

    def __init__(
        self,
        dataset: Dataset,
        device: torch.device | str,
        batch_size: int,
        *,
        shuffle: bool,
        drop_last: bool,
        seed: int,
        num_workers: int = 4,
    ) -> None:
        self.dataset, self.device, self.batch_size = dataset, torch.device(device), batch_size
        self.shuffle, self.drop_last, self.seed, self.num_workers = shuffle, drop_last, seed, num_workers

    def __len__(self) -> int:
        return num_batches(len(self.dataset), self.batch_size, self.drop_last)

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (images, labels) batches on the device, from batch `start_step` on."""
        n = len(self.dataset)
        samples = SeededSamples(self.dataset, epoch_order(n, self.seed, epoch, self.shuffle), self.seed, epoch)
        loader = DataLoader(
            samples,
            self.batch_size,
            sampler=range(start_step * self.batch_size, min(len(self) * self.batch_size, n)),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(derive_seed(self.seed, WORKERS, epoch)),  # not the global RNG
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
