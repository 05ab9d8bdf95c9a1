"""Seeded, stratified splits of a labelled pool (sizes as ``cnnlab.config.SplitSpec`` says)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from cnnlab.config.split_spec import SplitSpec
from cnnlab.data.types import ImageSet
from cnnlab.errors import CnnlabError


def hold_out(
    labels: np.ndarray, spec: SplitSpec, seed: int, class_names: Sequence[str], split_name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Splits positions ``0..len(labels)-1`` into (kept, held-out) per ``spec``.

    Stratified and seeded, except ``last:N`` which takes the last N in order.

    Raises:
        CnnlabError: when the split would leave a class without images.
    """
    total = len(labels)
    positions = np.arange(total)
    count = spec.size(total)
    if count == 0:
        return positions, positions[:0]
    if count >= total:
        raise CnnlabError(
            f"the {split_name} split ({count} images) would take all {total} images; use a smaller --{split_name}-split"
        )
    if spec.kind == "last":
        return positions[: total - count], positions[total - count :]
    counts = Counter(labels.tolist())
    rarest, rarest_count = min(counts.items(), key=lambda item: item[1])
    if rarest_count < 2:
        raise CnnlabError(
            f"class '{class_names[rarest]}' has only {rarest_count} image left, too few to split "
            f"into train and {split_name}; add images or provide a {split_name}/ folder"
        )
    num_classes = len(counts)
    count = max(count, num_classes)  # stratification needs one image of each class, at least
    if total - count < num_classes:
        raise CnnlabError(
            f"{total} images are too few for a {split_name} split holding all {num_classes} "
            f"classes; add images or provide a {split_name}/ folder"
        )
    kept, held = train_test_split(positions, test_size=count, stratify=labels, random_state=seed, shuffle=True)
    return np.sort(kept), np.sort(held)


def joined(first: ImageSet, second: ImageSet) -> ImageSet:
    """One split holding ``first``'s images, then ``second``'s (a refit's train + val).

    Two splits of one record store stay on disk (their rows joined); anything else is joined in memory.
    """
    labels = torch.cat([first.labels, second.labels])
    ids = [*first.ids, *second.ids]
    if first.stored and first.source is second.source:
        rows = [
            image_set.rows if image_set.rows is not None else np.arange(len(image_set)) for image_set in (first, second)
        ]
        return ImageSet(first.source, labels, ids, rows=np.concatenate(rows))
    return ImageSet(torch.cat([first.images, second.images]), labels, ids)
