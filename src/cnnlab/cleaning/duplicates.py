"""The same picture under two labels: exact copies (identical decoded pixels) and near copies.

The search is the data doctor's (:func:`cnnlab.data.similar.same_pictures`: perceptual hashes at most
:data:`~cnnlab.data.similar.NEAR` of 64 bits apart, of one mean colour), run here on the decoded images
training sees; only pairs under different labels are returned: copies under one label are no label problem.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cnnlab.data.similar import Copy, Look, look_at, same_pictures
from cnnlab.data.types import ImageSet
from cnnlab.progress import Progress

BATCH = 512

Conflict = Copy  # two images of one picture under different labels: .first, .second, .bits, .exact, .reason


def _looks_and_digests(images: ImageSet) -> tuple[list[Look], list[str]]:
    looks, digests = [], []
    with Progress("comparing images for copies", len(images)) as progress:
        for start in range(0, len(images), BATCH):
            batch = images.take(np.arange(start, min(start + BATCH, len(images)))).numpy()
            for image in batch:
                digests.append(hashlib.sha1(image.tobytes()).hexdigest())
                picture = image.transpose(1, 2, 0)
                looks.append(look_at(picture if picture.shape[2] == 3 else np.repeat(picture, 3, axis=2)))
            progress.advance(len(batch))
    return looks, digests


def find_conflicts(images: ImageSet) -> tuple[list[Conflict], str | None]:
    """Pairs of exact or near copies under different labels, closest first; and a note when near copies
    were not searched (pictures too sparse for a perceptual hash: digits, drawings)."""
    labels = images.labels.numpy()
    looks, digests = _looks_and_digests(images)
    copies, note = same_pictures(looks, digests)
    conflicts = [c for c in copies if labels[c.first] != labels[c.second]]
    return sorted(conflicts, key=lambda c: (not c.exact, c.bits, c.first, c.second)), note
