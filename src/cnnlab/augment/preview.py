"""Preview grids: the lesson's 2x4 one-op-at-a-time figure and random draws of a preset.

Both use the training code (``affine_batch``, ``BatchAugment``), so what you see is what trains.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes

from cnnlab.augment.batch import BatchAugment, affine_batch
from cnnlab.config import AugmentConfig, resolve_augment
from cnnlab.data.decode import decode_for_display
from cnnlab.errors import CnnlabError
from cnnlab.figures import new_figure, save_figure

LESSON_TITLES = (
    "Original", "Rotation (30°)", "Horizontal flip", "Width shift (20%)",
    "Height shift (20%)", "Zoom (20%)", "Brightness (±30%)", "Combined",
)


def to_batch(image: np.ndarray) -> torch.Tensor:
    """(H, W) or (H, W, C) uint8 -> float (1, C, H, W) in [0, 1]."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ValueError(f"expected an (H, W), (H, W, 1) or (H, W, 3) image, got shape {arr.shape}")
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255)


def to_image(x: torch.Tensor) -> np.ndarray:
    """float (C, H, W) in [0, 1] -> (H, W) or (H, W, 3) float array for imshow."""
    arr = x.detach().cpu().permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def _show(ax: Axes, x: torch.Tensor, title: str | None = None) -> None:
    """Draw one image without ticks, grey colormap for one channel."""
    ax.imshow(to_image(x), cmap="gray" if x.shape[0] == 1 else None, vmin=0.0, vmax=1.0)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def _draws(x: torch.Tensor, cfg: AugmentConfig, draws: int, seed: int) -> torch.Tensor:
    """``draws`` random augmentations of one image (1, C, H, W), reproducible from ``seed``."""
    # policy_chunk=1: a chunk shares one policy op; in a preview every draw should differ.
    aug = BatchAugment(cfg, generator=torch.Generator().manual_seed(seed), policy_chunk=1).train()
    with torch.random.fork_rng(devices=[]):  # policies use the global RNG: seed it, then restore it
        torch.manual_seed(seed)
        drawn: torch.Tensor = aug(x.expand(draws, -1, -1, -1).contiguous())
    return drawn


def lesson_panels(image: np.ndarray, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """The lesson's eight panels as (title, (C, H, W) tensor), each op at its range's edge.

    Rotation +30° (counter-clockwise), width / height shift +20% (right / down), zoom x1.2 (in),
    brightness x0.7 (the visible end on white-on-black digits), and one seeded draw of the
    ``lesson`` preset with brightness 0.7-1.3 for "Combined".
    """
    x = to_batch(image)
    combined = resolve_augment("lesson", brightness=(0.7, 1.3))
    images = [
        x,
        affine_batch(x, angle_deg=30.0),
        affine_batch(x, hflip=True),
        affine_batch(x, translate_frac=(0.2, 0.0)),
        affine_batch(x, translate_frac=(0.0, 0.2)),
        affine_batch(x, scale=1.2),
        (x * 0.7).clamp(0, 1),
        _draws(x, combined, 1, seed),
    ]
    return [(title, img[0]) for title, img in zip(LESSON_TITLES, images)]


def lesson_preview(image: np.ndarray, out: Path) -> Path:
    """Save the lesson's 2x4 augmentation grid for one image as a PNG.

    Args:
        image: (H, W) or (H, W, C) uint8, C = 1 or 3.
        out: Where to write the PNG (parent folders are created).

    Returns:
        ``out``.
    """
    panels = lesson_panels(image)
    fig = new_figure(10, 5.6)
    axes = fig.subplots(2, 4)
    for ax, (title, img) in zip(axes.flat, panels):
        _show(ax, img, title)
    return save_figure(fig, out, "Augmentation, one operation at a time")


def preset_preview(
    images: list[np.ndarray], cfg: AugmentConfig, draws: int, out: Path, seed: int = 0
) -> Path:
    """Save a grid: one row per image, the original then ``draws`` random augmentations.

    Mixup / CutMix are not drawn: they need a batch of labelled images.

    Args:
        images: (H, W) or (H, W, C) uint8 arrays; sizes may differ.
        cfg: The augmentation to draw from.
        draws: Random draws per image.
        out: Where to write the PNG.
        seed: Makes the draws reproducible.

    Returns:
        ``out``.
    """
    if not images or draws < 1:
        raise ValueError("preset_preview needs at least one image and one draw")
    rows, cols = len(images), draws + 1
    fig = new_figure(1.6 * cols, 1.7 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, image in enumerate(images):
        x = to_batch(image)
        _show(axes[r, 0], x[0], "Original" if r == 0 else None)
        for c, img in enumerate(_draws(x, cfg, draws, seed + r), start=1):
            _show(axes[r, c], img, f"Draw {c}" if r == 0 else None)
    return save_figure(fig, out)


FOLDER_SAMPLES = 4  # rows in a folder preview: enough to judge, small enough to read
PREVIEW_SIDE = 256  # px; larger photos are shrunk first, a panel is ~1.6 inches anyway


@dataclass
class Preview:
    """What ``preview_target`` wrote, and warnings about what the augmentation does to these classes."""

    written: list[Path]
    warnings: list[str]


def preview_target(target: Path, cfg: AugmentConfig, out_dir: Path, draws: int = 6, seed: int = 0,
                   draw_grid: bool = True) -> Preview:
    """The preview of an image file (the lesson's grid, and ``draws`` random draws when ``draw_grid``)
    or of a folder (random draws of a few of its images), written to ``out_dir``.

    Raises:
        CnnlabError: a missing target, or a folder without images.
    """
    from cnnlab.augment.meaning import meaning_warnings
    from cnnlab.data.discover import expand_inputs

    target = Path(target)
    if not target.exists():
        raise CnnlabError(f"IMAGE {target} does not exist; pass an image file or a folder of images")
    out_dir = Path(out_dir)
    if target.is_file():
        image = decode_for_display(target, PREVIEW_SIDE)
        written = [lesson_preview(image, out_dir / "augmentation.png")]
        if draw_grid:
            written.append(preset_preview([image], cfg, draws, out_dir / "augmentation_draws.png", seed=seed))
        return Preview(written, [])
    files = expand_inputs([target])
    picked = sorted(random.Random(seed).sample(files, min(FOLDER_SAMPLES, len(files))))
    images = [decode_for_display(p, PREVIEW_SIDE) for p in picked]
    classes = sorted({p.relative_to(target).parts[0] for p in files if p.parent != target})
    channels = 1 if all(im.ndim == 2 for im in images) else 3
    written = [preset_preview(images, cfg, draws, out_dir / "augmentation_draws.png", seed=seed)]
    return Preview(written, meaning_warnings(cfg, channels, classes))
