"""Inference batch sizes, apart from the loaders so that predicting and serving need not import Lightning."""

from __future__ import annotations

from collections.abc import Sequence

import torch

EVAL_BATCH_SIZE = 512  # no gradients at evaluation: larger batches amortise per-call overhead
# On a CPU, inference slows down once a batch's activations outgrow the caches: EfficientNet-Lite0
# at 224 px scores 3.4x more images per second in batches of 8 than of 512
# (bench/bench_eval_batch.py). So CPU batches hold about 400k pixels: 512 MNIST digits, 392
# CIFAR images, 8 images of 224 px.
CPU_EVAL_PIXELS = 8 * 224 * 224


def eval_batch_size(image_shape: Sequence[int], device: torch.device | str = "cpu") -> int:
    """The inference batch size for images of ``image_shape`` (..., H, W) on ``device``."""
    if torch.device(device).type != "cpu":
        return EVAL_BATCH_SIZE
    pixels = max(1, int(image_shape[-1]) * int(image_shape[-2]))
    return max(1, min(EVAL_BATCH_SIZE, CPU_EVAL_PIXELS // pixels))
