"""Test-time augmentation (TTA) for any classifier: the mean of its probabilities over a few views.

The views are the image and its mirror image, and where images are stored larger than the
model's input (a pretrained run's margin, ``cnnlab.data.crop``) the classic 10-crop: the centre
and the four corners of the stored square, each also mirrored. Every view is a crop of pixels
the run stored, so TTA needs nothing the plain prediction does not have.

It runs through ``run_batches`` like every other pass: the batch is normalised whole (scaling
is per channel, so cropping after it equals cropping before), and the forward below cuts the
views from it one at a time (all views in one batch measured slower on a CPU: activations
outgrow the caches, see ``fast_cnn.FastCifarNet._mirrored``).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.data.types import LazyImages
from cnnlab.models.inference import Forward, class_logits, is_channels_last, run_batches


def _offsets(height: int, width: int, side: int | None) -> list[tuple[int, int]]:
    """(top, left) of each ``side`` crop: the centre (placed as ``center_crop`` places it), then the
    four corners; one (0, 0) "crop" of the whole image when it is not larger than ``side``."""
    if side is None or (height <= side and width <= side):
        return [(0, 0)]
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    bottom, right = max(0, height - side), max(0, width - side)
    return [(top, left), (0, 0), (0, right), (bottom, 0), (bottom, right)]


def crop_views(images: torch.Tensor, side: int | None) -> list[tuple[str, torch.Tensor]]:
    """The views of (N, C, H, W) images as TTA averages them, named ("centre", "top-left, mirrored", ...)."""
    offsets = _offsets(images.shape[-2], images.shape[-1], side)
    names = ["whole"] if len(offsets) == 1 else ["centre", "top-left", "top-right", "bottom-left", "bottom-right"]
    out = []
    for name, (top, left) in zip(names, offsets):
        view = images if len(offsets) == 1 else images[..., top : top + side, left : left + side]  # type: ignore[operator]
        out += [(name, view), (f"{name}, mirrored", view.flip(-1))]
    return out


def view_count(stored: int, side: int | None) -> int:
    """How many views TTA averages for images stored at ``stored`` px: 2 (image, mirror) or 10."""
    return 2 * len(_offsets(stored, stored, side))


def describe(stored: int, side: int | None) -> str:
    """The views in words, for the console, metrics.json and the report."""
    if view_count(stored, side) == 2:
        return "2 views: the image and its mirror image"
    return f"10 views: the centre and the 4 corner {side}-px crops of the {stored}-px stored image, each also mirrored"


def views_of(normalize: Normalize, stored: int) -> tuple[int, str]:
    """(view count, description) of TTA on images stored at ``stored`` px and scaled by ``normalize``."""
    return view_count(stored, normalize.crop), describe(stored, normalize.crop)


def tta_forward(side: int | None) -> Forward:
    """A ``run_batches`` forward giving the log of the mean softmax over the views (its softmax is that mean)."""

    def forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        layout = torch.channels_last if is_channels_last(model) else torch.contiguous_format
        offsets = _offsets(height, width, side)
        total: torch.Tensor | None = None
        for top, left in offsets:
            view = x if len(offsets) == 1 else x[..., top : top + side, left : left + side]  # type: ignore[operator]
            for seen in (view, view.flip(-1)):
                probs = torch.softmax(class_logits(model, seen.contiguous(memory_format=layout)).float(), dim=1)
                total = probs if total is None else total + probs
        assert total is not None  # at least one offset, so at least two views
        mean = total / (2 * len(offsets))
        return mean.clamp_min(1e-12).log()  # softmax(log p) = p: callers softmax logits as usual

    return forward


def tta_probs(
    model: nn.Module, images: torch.Tensor | LazyImages, normalize: Normalize, autocast: torch.dtype | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields ``(start, mean probabilities over the views)`` per batch, as ``predict_probs`` does without TTA.

    ``normalize.crop`` (the model's input side when images are stored larger) decides the crops.
    """
    for start, log_mean in run_batches(
        model, images, normalize.uncropped(), tta_forward(normalize.crop), autocast=autocast
    ):
        yield start, torch.softmax(log_mean, dim=1)
