"""Images stored with a margin around the model's input: centre crops to evaluate, random ones to train.

A photo is decoded with its shorter side resized to ``stored_side(side, crop_pct)`` and the long
side's ends cropped to that square (aspect kept, never squashed; see ``decode.decode_image``).
The model sees the centre ``side`` x ``side`` of it: exactly timm's evaluation transform (resize the
shorter side to ``floor(side / crop_pct)``, centre-crop ``side``), which pretrained weights were
scored with (``crop_pct`` 0.875 for most ImageNet models). Training with augmentation takes a
random ``side`` crop, or a random resized crop from the whole stored square. ``crop_pct`` 1 is
cnnlab's older storage: the square at the model's size, the shorter side whole.

Records stay fixed-size squares, so the memory, cache and record-store paths are unchanged.
"""

from __future__ import annotations

import math

import torch

NO_MARGIN = 1.0  # runs saved before crop_pct existed stored the model's input itself


def stored_side(side: int, crop_pct: float) -> int:
    """The side images are stored at for a model input of ``side``: timm's ``floor(side / crop_pct)``."""
    return side if crop_pct >= 1.0 else math.floor(side / crop_pct)


def center_crop(images: torch.Tensor, side: int) -> torch.Tensor:
    """The centre ``side`` x ``side`` of (N, C, H, W) images (a view; unchanged when not larger).

    Offsets as torchvision's ``CenterCrop``: ``round((H - side) / 2)``.
    """
    height, width = images.shape[-2:]
    if height <= side and width <= side:
        return images
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return images[..., top : top + side, left : left + side]


def random_crop(images: torch.Tensor, side: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One uniformly placed ``side`` x ``side`` crop per image of (N, C, H, W) ``images`` (a new tensor).

    Integer offsets, no resampling: the pixels are the stored ones, as the centre crop's are.
    """
    n, _, height, width = images.shape
    if height <= side and width <= side:
        return images
    draws_on = generator.device if generator is not None else torch.device("cpu")
    tops = torch.randint(0, height - side + 1, (n,), generator=generator, device=draws_on)
    lefts = torch.randint(0, width - side + 1, (n,), generator=generator, device=draws_on)
    rows = (tops.to(images.device).view(n, 1) + torch.arange(side, device=images.device)).view(n, 1, side, 1)
    cols = (lefts.to(images.device).view(n, 1) + torch.arange(side, device=images.device)).view(n, 1, 1, side)
    batch = torch.arange(n, device=images.device).view(n, 1, 1, 1)
    channel = torch.arange(images.shape[1], device=images.device).view(1, -1, 1, 1)
    return images[batch, channel, rows, cols]
