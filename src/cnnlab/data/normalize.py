"""uint8 batches to the float input a model wants: the one place pixel scaling happens."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cnnlab.data.crop import center_crop
from cnnlab.data.preprocess import Preprocess


class Normalize(nn.Module):
    """``(x / 255 - mean) / std`` per channel; mean 0 and std 1 is the lesson's plain rescale.

    ``crop``: the model's input side when images are stored larger (``cnnlab.data.crop``): every
    image larger than that is centre-cropped first, so each scorer, exporter and explainer that
    scales pixels here sees the evaluation view. A training batch arrives already cropped at random.
    """

    mean: torch.Tensor  # buffers, (1, C, 1, 1)
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop: int | None = None) -> None:
        super().__init__()
        self.crop = crop
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @staticmethod
    def to_unit(images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) to float in [0, 1]."""
        return images.float().div_(255.0)

    def view(self, images: torch.Tensor) -> torch.Tensor:
        """The part of (N, C, H, W) images the model sees: the centre crop (a view), or all of them."""
        return images if self.crop is None else center_crop(images, self.crop)

    def forward(self, unit: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] to the model's input scale (centre-cropped to ``crop`` first)."""
        return (self.view(unit) - self.mean) / self.std

    def uncropped(self) -> Normalize:
        """The same scaling without the centre crop (test-time augmentation cuts its own crops)."""
        return Normalize(self.mean.flatten().tolist(), self.std.flatten().tolist(), crop=None)

    @classmethod
    def of(cls, preprocess: Preprocess) -> Normalize:
        """The scaling (and centre crop) a run's input format describes."""
        return cls(preprocess.mean, preprocess.std, preprocess.side if preprocess.has_margin else None)


def default_stats(
    channels: int, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float], list[float]]:
    """The model's own mean/std (repeated to ``channels``), or 0/1 for models without any."""
    mean = list(mean) if mean is not None else [0.0]
    std = list(std) if std is not None else [1.0]
    if len(mean) != channels:  # e.g. a gray model given ImageNet RGB stats: average them
        mean = [sum(mean) / len(mean)] * channels
        std = [sum(std) / len(std)] * channels
    return mean, std
