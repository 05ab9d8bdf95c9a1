"""Preview grids: each operation of an augmentation alone (the lesson's 2x4 figure for its preset),
and random draws of the whole augmentation.

Both use the training code (``affine_batch``, ``BatchAugment``), so what you see is what trains.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.axes import Axes

from cnnlab.augment.batch import BatchAugment, affine_batch
from cnnlab.config import AugmentConfig, resolve_augment
from cnnlab.data.decode import decode_for_display
from cnnlab.errors import CnnlabError
from cnnlab.figures import new_figure, save_figure

COLUMNS = 4  # panels per row of the one-operation-at-a-time grid
POLICY_NAMES = {"randaugment": "RandAugment", "trivialaugment": "TrivialAugment"}


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


def _factor_range(pair: tuple[float, float]) -> tuple[str, float]:
    """A multiplier range in words ("±30%" when symmetric about 1, else "×0.5–1.2") and its end
    farther from 1, the one a panel shows."""
    low, high = pair
    text = f"±{high - 1:.0%}" if math.isclose(1 - low, high - 1) else f"×{low:g}–{high:g}"
    return text, low if 1 - low >= high - 1 else high


def _alone(x: torch.Tensor, cfg: AugmentConfig, seed: int, **only: Any) -> torch.Tensor:
    """One seeded draw with just the ``only`` options on (fill mode as ``cfg``'s)."""
    return _draws(x, AugmentConfig(fill_mode=cfg.fill_mode, **only), 1, seed)


def lesson_panels(image: np.ndarray, cfg: AugmentConfig | None = None, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """Each operation ``cfg`` turns on, one at a time, as (title, (C, H, W) tensor), then one draw of all.

    Titles and values come from ``cfg`` (default: the ``lesson`` preset), filled as its fill mode
    says, so the grid shows what trains. Operations with a range are shown at its edge: rotation
    +DEG (counter-clockwise), shifts +FRAC (right / down), zoom x(1 + Z) (in), shear +DEG, brightness
    and contrast at the end farther from 1; the random ones (whole-pixel translation, resized
    crop, a policy, erasing) as one seeded draw. "Combined" is a seeded draw of ``cfg`` itself.
    """
    cfg = cfg or resolve_augment("lesson")
    x = to_batch(image)

    def warp(**op: Any) -> torch.Tensor:
        return affine_batch(x, fill_mode=cfg.fill_mode, **op)

    ops: list[tuple[bool, str, Callable[[], torch.Tensor]]] = [
        (bool(cfg.rotation), f"Rotation ({cfg.rotation:g}°)", lambda: warp(angle_deg=cfg.rotation)),
        (cfg.hflip, "Horizontal flip", lambda: warp(hflip=True)),
        (cfg.vflip, "Vertical flip", lambda: warp(vflip=True)),
        (
            bool(cfg.width_shift),
            f"Width shift ({cfg.width_shift:.0%})",
            lambda: warp(translate_frac=(cfg.width_shift, 0.0)),
        ),
        (
            bool(cfg.height_shift),
            f"Height shift ({cfg.height_shift:.0%})",
            lambda: warp(translate_frac=(0.0, cfg.height_shift)),
        ),
        (
            bool(cfg.translate),
            f"Translate (±{cfg.translate} px)",
            lambda: _alone(x, cfg, seed, translate=cfg.translate),
        ),
        (bool(cfg.zoom), f"Zoom ({cfg.zoom:.0%})", lambda: warp(scale=1 + cfg.zoom)),
        (bool(cfg.shear), f"Shear ({cfg.shear:g}°)", lambda: warp(shear_deg=cfg.shear)),
        (
            cfg.random_resized_crop is not None,
            f"Resized crop (area ≥ {cfg.random_resized_crop or 0:.0%})",
            lambda: _alone(x, cfg, seed, random_resized_crop=cfg.random_resized_crop),
        ),
    ]
    for name in ("brightness", "contrast"):
        pair = getattr(cfg, name)
        if pair is not None:
            text, edge = _factor_range(pair)
            ops.append((True, f"{name.capitalize()} ({text})", partial(_alone, x, cfg, seed, **{name: (edge, edge)})))
    if cfg.policy is not None:
        ops.append((True, f"{POLICY_NAMES[cfg.policy]} (a draw)", lambda: _alone(x, cfg, seed, policy=cfg.policy)))
    if cfg.random_erasing:
        ops.append(
            (True, f"Random erasing (p {cfg.random_erasing:g})", lambda: _alone(x, cfg, seed, random_erasing=1.0))
        )
    panels = [("Original", x)] + [(title, draw()) for on, title, draw in ops if on]
    if len(panels) > 2:  # with one operation, "Combined" would be another draw of the same
        panels.append(("Combined", _draws(x, cfg, 1, seed)))
    return [(title, img[0]) for title, img in panels]


def lesson_preview(image: np.ndarray, out: Path, cfg: AugmentConfig | None = None) -> Path:
    """Save the grid of :func:`lesson_panels` for one image as a PNG (4 panels a row).

    Args:
        image: (H, W) or (H, W, C) uint8, C = 1 or 3.
        out: Where to write the PNG (parent folders are created).
        cfg: The augmentation shown (default: the ``lesson`` preset, the lesson's 2x4 grid).

    Returns:
        ``out``.
    """
    cfg = cfg or resolve_augment("lesson")
    panels = lesson_panels(image, cfg)
    rows = math.ceil(len(panels) / COLUMNS)
    fig = new_figure(10, 0.4 + 2.6 * rows)
    axes = fig.subplots(rows, COLUMNS, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (title, img) in zip(axes.flat, panels):
        _show(ax, img, title)
    if len(panels) == 1:
        title = "No augmentation option is on"
    else:
        moves = cfg.geometric or cfg.translate
        title = "Augmentation, one operation at a time" + (f" (fill mode: {cfg.fill_mode})" if moves else "")
    return save_figure(fig, out, title)


def preset_preview(images: list[np.ndarray], cfg: AugmentConfig, draws: int, out: Path, seed: int = 0) -> Path:
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


def preview_target(
    target: Path, cfg: AugmentConfig, out_dir: Path, draws: int = 6, seed: int = 0, draw_grid: bool = True
) -> Preview:
    """The preview of an image file (each operation of ``cfg`` alone, and ``draws`` random draws when
    ``draw_grid``) or of a folder (random draws of a few of its images), written to ``out_dir``.

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
        written = [lesson_preview(image, out_dir / "augmentation.png", cfg)]
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
