"""Alternating flip (``--flip-mode alternate``): each training image mirrored on every other epoch.

airbench94's idea: instead of a fresh coin for every image every epoch, a seeded coin picks which
images are mirrored in the first epoch, and each later epoch mirrors exactly the others. Any two
consecutive epochs then show every image both ways, where random flips show a quarter of the
images the same way twice running.

The choice depends only on (seed, the image's position in the training split, epoch), so it
needs no state: a resumed run, another process of the same run, or any data set gets the same
images mirrored in the same epochs. The coin is a counter-based hash of the position (splitmix64),
not a table, so it holds for a split of any size, e.g. a refit's train + validation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64's increment
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_FLIP_STREAM = 0x666C6970  # "flip": keeps these coins apart from any other use of the seed


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Steele et al.'s splitmix64 finaliser on uint64s: well-mixed bits from consecutive integers."""
    with np.errstate(over="ignore"):  # wrapping multiplication is the point
        x = (x + _GOLDEN) * np.uint64(1)
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        mixed: np.ndarray = x ^ (x >> np.uint64(31))
        return mixed


@dataclass(frozen=True)
class AlternatingFlip:
    """Which images of a training batch to mirror left-right in an epoch, and the mirroring.

    ``seed``: the stage's seed; the same seed mirrors the same images in the same epochs.
    """

    seed: int

    def first_epoch(self, positions: np.ndarray) -> np.ndarray:
        """Whether each image (by its position in the training split) is mirrored in epoch 0."""
        key = _splitmix64(np.asarray([(self.seed * 2**32 + _FLIP_STREAM) % 2**64], dtype=np.uint64))
        bits = _splitmix64(np.asarray(positions, dtype=np.uint64) ^ key)
        return (bits >> np.uint64(63)).astype(bool)

    def mask(self, positions: np.ndarray, epoch: int) -> np.ndarray:
        """Whether each image is mirrored in ``epoch``: epoch 0's choice, inverted on odd epochs."""
        return self.first_epoch(positions) ^ bool(epoch % 2)

    def __call__(self, images: torch.Tensor, positions: np.ndarray, epoch: int) -> torch.Tensor:
        """The batch (N, C, H, W) with this epoch's chosen images mirrored left-right."""
        flip = torch.from_numpy(self.mask(positions, epoch))
        if not flip.any():
            return images
        images = images.clone()
        images[flip] = images[flip].flip(-1)
        return images
