"""Datasets as in-memory uint8 splits (or an ImageFolder for ImageNet) and deterministic batch iterators."""

from nasctl.data import cifar, fashion_mnist, imagenet, imagenet16, svhn, synthetic  # noqa: F401  (register loaders)
from nasctl.data.base import DATASETS, ImageSplit, load_split
from nasctl.data.batches import DeviceBatches, HostBatches
from nasctl.data.imagenet import load_folder_split

__all__ = ["DATASETS", "DeviceBatches", "HostBatches", "ImageSplit", "load_folder_split", "load_split"]
