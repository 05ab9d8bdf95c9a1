"""Named augmentation presets (plain data) and warnings for choices that change what a class means."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from cnnlab.augment.options import AugmentConfig, field_names, flag, suggest
from cnnlab.errors import CnnlabError

# The lesson's ImageDataGenerator settings: rotation_range=20, width/height_shift_range=0.2,
# horizontal_flip=True, zoom_range=0.2, fill_mode='nearest'.
_LESSON: dict[str, Any] = {
    "rotation": 20.0,
    "width_shift": 0.2,
    "height_shift": 0.2,
    "hflip": True,
    "zoom": 0.2,
    "fill_mode": "nearest",
}

# Presets are data: name -> field overrides on top of AugmentConfig's all-off defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "light": {"hflip": True, "width_shift": 0.1, "height_shift": 0.1},
    "lesson": dict(_LESSON),
    # The lesson's production pipeline adds shear_range=0.15 and brightness_range=[0.8, 1.2].
    # 0.15 was written for Keras' old radian reading of shear_range; 0.15 rad = 8.6°. Taken in
    # today's Keras unit (degrees) it would be an invisible 0.15°, so we keep the lesson's intent.
    "production": {**_LESSON, "shear": round(math.degrees(0.15), 1), "brightness": (0.8, 1.2)},
    # TrivialAugmentWide has no knobs to tune and beats RandAugment on CIFAR in its paper;
    # random erasing at timm's default probability 0.25.
    "strong": {**_LESSON, "policy": "trivialaugment", "random_erasing": 0.25},
}

_DIGIT_MAX_ROTATION = 30.0  # degrees; beyond this a 6 starts to look like a 9


def resolve_augment(preset: str = "none", **overrides: Any) -> AugmentConfig:
    """Build a config from a preset name plus field overrides (None values are ignored).

    Args:
        preset: One of ``PRESETS``.
        **overrides: AugmentConfig fields; a value of None means "keep the preset's".

    Returns:
        The validated, frozen config.

    Raises:
        CnnlabError: Unknown preset or field, or a value out of range.
    """
    if preset not in PRESETS:
        raise CnnlabError(
            f"--augment must be one of {', '.join(PRESETS)}, got {preset!r}" + suggest(preset, list(PRESETS))
        )
    known = field_names()
    for key in overrides:
        if key not in known:
            raise CnnlabError(f"unknown augment option {key!r}" + suggest(key, known))
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(AugmentConfig(), **{**PRESETS[preset], **chosen})


def _is_digits(class_names: list[str]) -> bool:
    """True when every class name is a single digit 0-9 (MNIST-like data)."""
    return bool(class_names) and all(len(n) == 1 and n.isdigit() for n in class_names)


def meaning_warnings(cfg: AugmentConfig, channels: int, class_names: list[str]) -> list[str]:
    """Warnings (not refusals) for augmentations that can change what an image's label means.

    Args:
        cfg: The resolved config.
        channels: 1 for grayscale data, 3 for colour.
        class_names: The data set's class names, in label order.

    Returns:
        One human-readable line per problem; empty when nothing looks wrong.
    """
    out: list[str] = []
    if _is_digits(class_names):
        if cfg.vflip:
            out.append(f"{flag('vflip')} on digits: a flipped 6 looks like a 9 and a 2 like a 5; use --no-vflip")
        if cfg.hflip:
            out.append(f"{flag('hflip')} on digits: mirrored digits are not digits (3, 7 read wrong); use --no-hflip")
        if cfg.rotation > _DIGIT_MAX_ROTATION:
            out.append(
                f"{flag('rotation')} {cfg.rotation:g} on digits: beyond about {_DIGIT_MAX_ROTATION:g}° a 6 "
                f"starts to look like a 9; try --rotation 15"
            )
        if cfg.policy == "trivialaugment":
            out.append("--policy trivialaugment on digits: its rotations reach 135°, turning 6 into 9; "
                       "try --policy randaugment (±9° at its default magnitude)")
    if channels == 1 and cfg.policy is not None:
        out.append(
            f"{flag('policy')} {cfg.policy} on grayscale data: its Color (saturation) op does nothing on "
            "one channel, so some draws leave the image unchanged"
        )
    return out
