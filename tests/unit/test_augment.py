"""The batched augmentation against torchvision's transforms and DARTS's Cutout, image by image."""

import itertools

import numpy as np
import pytest
import torch
from torchvision import transforms as v1
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from nasctl.config import AugmentConfig
from nasctl.data.augment import augment, crop_flip, cutout, normalize

MEAN, STD = [0.49139968, 0.48215827, 0.44653124], [0.24703233, 0.24348505, 0.26158768]


def stats(device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (MEAN, STD))


def images(n: int, h: int = 10, w: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def torchvision_crop_flip(image: torch.Tensor, padding: int, top: int, left: int, flip: bool) -> torch.Tensor:
    """What RandomCrop(padding=p) then RandomHorizontalFlip do once they have drawn (top, left, flip)."""
    h, w = image.shape[-2:]
    out = TF.crop(TF.pad(image, [padding], fill=0), top, left, h, w)
    return TF.horizontal_flip(out) if flip else out


def test_crop_flip_equals_torchvision_for_given_offsets():
    x, p = images(16), 3
    g = torch.Generator().manual_seed(1)
    top, left = torch.randint(0, 2 * p + 1, (2, 16), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    out = crop_flip(x, p, top, left, flip)
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.is_contiguous()
    for i in range(16):
        assert torch.equal(out[i], torchvision_crop_flip(x[i], p, int(top[i]), int(left[i]), bool(flip[i])))


def test_drawn_crops_cover_exactly_torchvisions_range():
    """Each augmented image is one of RandomCrop's (2p+1)^2 crops, flipped or not, and every choice occurs."""
    p, n = 2, 600
    x = images(n, 6, 7)
    cfg = AugmentConfig(crop_padding=p, flip=True, cutout=0)
    ones, zeros = torch.ones(1, 3, 1, 1), torch.zeros(1, 3, 1, 1)
    out = augment(x, cfg, zeros, ones, torch.Generator().manual_seed(0))  # mean 0, std 1: just x / 255
    choices = list(itertools.product(range(2 * p + 1), range(2 * p + 1), (False, True)))
    seen = set()
    for i in range(n):
        padded = TF.pad(x[i], [p]).float() / 255
        crops = {(t, left, f): padded[:, t : t + 6, left : left + 7] for t, left, f in choices}
        matches = [c for c, crop in crops.items() if torch.equal(out[i], crop.flip(-1) if c[2] else crop)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == set(choices)


def test_normalize_equals_totensor_then_normalize():
    x = images(4)
    mean, std = stats()
    ours = normalize(x, mean, std)
    v1_pipeline = v1.Compose([v1.ToTensor(), v1.Normalize(MEAN, STD)])
    v2_pipeline = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    for i in range(4):
        assert torch.equal(ours[i], v1_pipeline(x[i].permute(1, 2, 0).numpy()))
        torch.testing.assert_close(ours[i], v2_pipeline(x[i]))


def darts_cutout(img: np.ndarray, length: int, y: int, x: int) -> np.ndarray:
    """DARTS's Cutout.__call__ (utils.py) on a (C, H, W) array, with its centre given instead of drawn."""
    h, w = img.shape[1:]
    mask = np.ones((h, w), np.float32)
    y1, y2 = np.clip(y - length // 2, 0, h), np.clip(y + length // 2, 0, h)
    x1, x2 = np.clip(x - length // 2, 0, w), np.clip(x + length // 2, 0, w)
    mask[y1:y2, x1:x2] = 0.0
    return img * mask


@pytest.mark.parametrize("length", [4, 5, 16])
def test_cutout_equals_darts(length: int):
    x = normalize(images(6, 12, 12), *stats())
    cy, cx = torch.tensor([0, 11, 5, 6, 0, 11]), torch.tensor([0, 11, 6, 1, 11, 3])
    out = cutout(x, length, cy, cx)
    for i in range(6):
        expected = darts_cutout(x[i].numpy(), length, int(cy[i]), int(cx[i]))
        assert np.array_equal(out[i].numpy(), expected)


def test_cutout_zeroes_one_clipped_square_in_all_channels():
    x = torch.ones(2, 3, 20, 20)
    out = cutout(x, 8, torch.tensor([10, 1]), torch.tensor([9, 18]))
    assert torch.equal(out[0, :, 6:14, 5:13], torch.zeros(3, 8, 8)) and out[0].sum() == 3 * (400 - 64)
    assert torch.equal(out[1, :, 0:5, 14:20], torch.zeros(3, 5, 6)) and out[1].sum() == 3 * (400 - 30)


def test_cutout_is_drawn_after_normalisation():
    x = images(64, 16, 16)
    out = augment(x, AugmentConfig(crop_padding=0, flip=False, cutout=6), *stats(), torch.Generator().manual_seed(3))
    holes = out == 0
    assert holes.all(dim=1).equal(holes.any(dim=1))  # every hole spans all channels
    assert (holes[:, 0].sum(dim=(1, 2)) <= 36).all() and (holes[:, 0].sum(dim=(1, 2)) >= 9).all()


def test_augment_off_is_just_normalize():
    x = images(8)
    out = augment(x, AugmentConfig(crop_padding=0, flip=False, cutout=0), *stats(), torch.Generator())
    assert torch.equal(out, normalize(x, *stats()))
