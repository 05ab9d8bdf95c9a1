"""Warnings for augmentation choices that change what a class means (presets are in cnnlab.config)."""

from __future__ import annotations

from cnnlab.config import AugmentConfig

_DIGIT_MAX_ROTATION = 30.0  # degrees; beyond this a 6 starts to look like a 9


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
            out.append("--vflip on digits: a flipped 6 looks like a 9 and a 2 like a 5; use --no-vflip")
        if cfg.hflip:
            out.append("--hflip on digits: mirrored digits are not digits (3, 7 read wrong); use --no-hflip")
        if cfg.rotation > _DIGIT_MAX_ROTATION:
            out.append(
                f"--rotation {cfg.rotation:g} on digits: beyond about {_DIGIT_MAX_ROTATION:g}° a 6 "
                f"starts to look like a 9; try --rotation 15"
            )
        if cfg.policy == "trivialaugment":
            out.append(
                "--policy trivialaugment on digits: its rotations reach 135°, turning 6 into 9; "
                "try --policy randaugment (±9° at its default magnitude)"
            )
    if channels == 1 and cfg.policy is not None:
        out.append(
            f"--policy {cfg.policy} on grayscale data: its Color (saturation) op does nothing on "
            "one channel, so some draws leave the image unchanged"
        )
    return out


def mirror_warning(class_names: list[str]) -> str | None:
    """A warning for test-time augmentation on digits, whose views include mirror images."""
    if _is_digits(class_names):
        return "--tta averages mirrored views too: on digits a mirrored digit is not a digit, so TTA may score lower"
    return None
