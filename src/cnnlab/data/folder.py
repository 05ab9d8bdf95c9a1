"""Decodes a listing of image files into uint8 tensors, in parallel, skipping bad files."""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from cnnlab.data.decode import UnreadableImage, decode_image, is_grayscale, probe_image
from cnnlab.data.types import ImageSet, SkippedFile

PROBE_SAMPLE = 256  # files whose headers decide channels and size: enough, and fast
LARGEST_DEFAULT_SIDE = 128  # own CNNs on photos: beyond this a CPU run gets slow for little gain


def guess_format(paths: list[Path]) -> tuple[bool, int]:
    """(all grayscale?, median shorter side) from the headers of an even sample of ``paths``."""
    step = max(1, len(paths) // PROBE_SAMPLE)
    gray, sides = True, []
    for path in paths[::step]:
        try:
            info = probe_image(path)
        except UnreadableImage:
            continue  # reported when the file is decoded
        gray = gray and is_grayscale(info)
        sides.append(min(info.width, info.height))
    return gray, int(statistics.median(sides)) if sides else LARGEST_DEFAULT_SIDE


def default_side(median_side: int) -> int:
    """Own CNNs see small images at their own size and photos at a CPU-friendly size."""
    return min(median_side, LARGEST_DEFAULT_SIDE)


def decode_files(
    files: list[tuple[Path, int]],
    channels: int,
    size: int,
    workers: int,
) -> tuple[ImageSet, list[SkippedFile]]:
    """Decodes ``(path, label)`` pairs to an ImageSet of ``size`` x ``size`` images.

    PIL releases the GIL while decoding, so a thread pool uses every core without the
    start-up and copy costs of worker processes.
    """

    def one(item: tuple[Path, int]) -> np.ndarray | str:
        try:
            return decode_image(item[0], channels=channels, size=size)
        except UnreadableImage as exc:
            return exc.reason

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(one, files))
    arrays, labels, ids, skipped = [], [], [], []
    for (path, label), result in zip(files, results):
        if isinstance(result, str):
            skipped.append(SkippedFile(str(path), result))
            continue
        arrays.append(result)
        labels.append(label)
        ids.append(str(path))
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    else:
        images = torch.zeros((0, channels, size, size), dtype=torch.uint8)
    return ImageSet(images, torch.as_tensor(labels, dtype=torch.long), ids), skipped
