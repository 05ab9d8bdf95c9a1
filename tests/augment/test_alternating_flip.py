"""--flip-mode alternate: a seeded half of the images mirrored in epoch 0, then each image on every other epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.augment import build_batch_augment
from cnnlab.augment.batch import alternating_flip
from cnnlab.augment.flip import AlternatingFlip
from cnnlab.config import AugmentConfig
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.errors import CnnlabError

# Seed 7's epoch-0 choice for positions 0-11, as first computed: a change here changes which images
# every alternate-flip run mirrors, so it must be deliberate.
SEED_7_FIRST = [1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]


def marked_split(n: int) -> ImageSet:
    """n 1x4x4 images, each with a bright pixel at its left edge (mirrored: at the right) and its
    position written in the top-right pixel's neighbour row, so a batch tells which image it holds."""
    images = torch.zeros(n, 1, 4, 4, dtype=torch.uint8)
    images[:, 0, 1, 0] = 255  # left edge marker
    images[:, 0, 3, :] = torch.arange(n, dtype=torch.uint8).view(n, 1)  # position, the same either way
    return ImageSet(images, torch.arange(n) % 2, [f"{i}.png" for i in range(n)])


def mirrored_by_position(data: ImageDataModule, epoch: int) -> dict[int, bool]:
    """Serves one training epoch; {position: mirrored?} from the markers."""
    loader = data.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning does before each epoch, on a resume too
    seen = {}
    for images, _ in loader:
        for image in images:
            seen[int(image[0, 3, 0])] = bool(image[0, 1, 3] == 255)
    return seen


def test_the_same_images_are_mirrored_in_epoch_0_the_others_in_1_and_again_the_first_in_2() -> None:
    n = 12
    data = PreparedData({"train": marked_split(n), "val": marked_split(2), "test": marked_split(2)}, ["a", "b"], "t")
    module = ImageDataModule(data, batch_size=5, seed=7, train_by_position=AlternatingFlip(7))
    epochs = [mirrored_by_position(module, epoch) for epoch in (0, 1, 2)]
    first = [int(epochs[0][p]) for p in range(n)]
    assert first == SEED_7_FIRST
    assert all(epochs[1][p] != epochs[0][p] for p in range(n))  # each image the other way round
    assert epochs[2] == epochs[0]
    # A fresh loader (a resumed process) at epoch 2 mirrors the same images: no state but (seed, position, epoch).
    again = ImageDataModule(data, batch_size=3, seed=7, train_by_position=AlternatingFlip(7))
    assert mirrored_by_position(again, 2) == epochs[0]


def test_the_choice_is_about_half_differs_by_seed_and_holds_for_any_split_size() -> None:
    positions = np.arange(20_000)
    first = AlternatingFlip(0).first_epoch(positions)
    assert 0.48 < first.mean() < 0.52
    assert (first != AlternatingFlip(1).first_epoch(positions)).mean() > 0.4
    assert np.array_equal(AlternatingFlip(0).first_epoch(positions[:50]), first[:50])  # no table to outgrow


def test_the_loader_flips_replace_the_augment_coin_and_leave_other_ops_on() -> None:
    cfg = AugmentConfig(hflip=True, flip_mode="alternate", translate=2)
    augment = build_batch_augment(cfg, loader_flips=True)
    assert augment is not None and not augment.random_hflip and not augment.warps  # translate only: no warp
    x = torch.rand(8, 3, 16, 16)
    augment.train()
    assert augment(x).shape == x.shape
    # Where no loader knows positions and epochs (cached feature views), the coin stays.
    assert build_batch_augment(cfg) is not None and build_batch_augment(cfg).random_hflip  # type: ignore[union-attr]
    assert isinstance(alternating_flip(cfg, 3), AlternatingFlip)
    assert alternating_flip(AugmentConfig(hflip=True), 3) is None


def test_alternate_without_hflip_is_refused_naming_both_flags() -> None:
    with pytest.raises(CnnlabError, match=r"--flip-mode alternate.*--hflip"):
        AugmentConfig(flip_mode="alternate")
