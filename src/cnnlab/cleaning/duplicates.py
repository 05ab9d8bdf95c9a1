"""The same picture under two labels: exact copies (identical decoded pixels) and near copies.

Near copies are compared on small thumbnails (32 x 32, each channel's mean removed, unit length:
the picture's layout, not its colour): a photo resized, re-encoded or brightened stays above a
cosine similarity of :data:`NEAR` with its original, and the two are each other's closest image.
Only pairs under different labels are returned: copies under one label are no label problem.
Measured on dtd10 (1,200 texture photos): a copy resized to 180 px and saved as JPEG at quality 60
scored 0.995 with its original; 9 pairs under one label passed 0.98 and no pair under different
labels did (highest 0.967). With one mean for all channels, plain uniform surfaces of one hue
matched across labels (0.98-0.99).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab.data.types import ImageSet
from cnnlab.progress import Progress

THUMB = 32  # px: enough to tell photos apart, small enough to compare every pair
NEAR = 0.98  # cosine similarity of thumbnails from which two images count as one picture
MAX_PAIRWISE = 50_000  # images: beyond, near copies are not searched (N^2 comparisons); exact ones still are
BATCH = 512


@dataclass(frozen=True)
class Conflict:
    """Two images of one picture under different labels."""

    first: int
    second: int
    similarity: float  # 1.0 for exact copies

    @property
    def exact(self) -> bool:
        return self.similarity >= 1.0


def _thumbnails_and_hashes(images: ImageSet) -> tuple[torch.Tensor, list[str]]:
    thumbs, hashes = [], []
    with Progress("comparing images for copies", len(images)) as progress:
        for start in range(0, len(images), BATCH):
            batch = images.take(np.arange(start, min(start + BATCH, len(images))))
            hashes += [hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in batch]
            small = F.adaptive_avg_pool2d(batch.float(), THUMB)
            small = small - small.mean((2, 3), keepdim=True)  # per channel: layout, not colour
            thumbs.append(F.normalize(small.flatten(1), dim=1))
            progress.advance(len(batch))
    return torch.cat(thumbs), hashes


def _closest(thumbs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's most similar other image, and that similarity."""
    closest, similarity = [], []
    for start in range(0, len(thumbs), BATCH):
        block = thumbs[start : start + BATCH] @ thumbs.T
        block[torch.arange(len(block)), torch.arange(start, start + len(block))] = -2.0  # not itself
        best = block.max(1)
        closest.append(best.indices)
        similarity.append(best.values)
    return torch.cat(closest), torch.cat(similarity)


def find_conflicts(images: ImageSet, near: float = NEAR) -> tuple[list[Conflict], str | None]:
    """Pairs of exact or near copies under different labels, most similar first; and a note when
    near copies were not searched (too many images)."""
    labels = images.labels.numpy()
    thumbs, hashes = _thumbnails_and_hashes(images)
    found: dict[tuple[int, int], float] = {}
    first_of: dict[str, int] = {}
    for index, digest in enumerate(hashes):
        other = first_of.setdefault(digest, index)
        if other != index and labels[other] != labels[index]:
            found[(other, index)] = 1.0
    note = None
    if len(images) > MAX_PAIRWISE:
        note = f"near copies were not searched: {len(images):,} images (more than {MAX_PAIRWISE:,})"
    elif len(images) > 1:
        closest, similarity = _closest(thumbs)
        for index, other in enumerate(closest.tolist()):
            if index < other and closest[other] == index and labels[index] != labels[other] \
                    and similarity[index] >= near and (index, other) not in found:
                found[(index, other)] = min(float(similarity[index]), 0.9999)
    conflicts = [Conflict(a, b, s) for (a, b), s in found.items()]
    return sorted(conflicts, key=lambda c: (-c.similarity, c.first, c.second)), note
