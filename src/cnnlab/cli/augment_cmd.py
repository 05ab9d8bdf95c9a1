"""``cnnlab augment preview`` and the augmentation flags shared with ``cnnlab train``."""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cnnlab.augment.options import FILL_MODES, POLICIES, AugmentConfig, suggest
from cnnlab.augment.presets import PRESETS, meaning_warnings, resolve_augment
from cnnlab.errors import CnnlabError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif")
_FOLDER_SAMPLES = 4  # rows in a folder preview: enough to judge, small enough to read
_PREVIEW_SIDE = 256  # px; larger photos are shrunk first, a panel is ~1.6 inches anyway
_MAX_DRAWS = 16

# Flags whose value is a number, in the order they appear in --help: (dest, metavar, help).
_NUMBER_FLAGS = (
    ("rotation", "DEG", "rotate by U[-DEG, DEG] degrees (lesson: 20)"),
    ("width_shift", "FRAC", "shift left/right by up to FRAC of the width (lesson: 0.2)"),
    ("height_shift", "FRAC", "shift up/down by up to FRAC of the height (lesson: 0.2)"),
    ("zoom", "Z", "zoom by a factor in [1-Z, 1+Z] (lesson: 0.2)"),
    ("shear", "DEG", "shear by U[-DEG, DEG] degrees (Keras' unit; the lesson's 0.15 rad = 8.6)"),
    ("random_resized_crop", "SCALE", "crop a random box of area in [SCALE, 1] and resize it back (e.g. 0.08)"),
    ("random_erasing", "P", "erase one random box per image with probability P"),
    ("mixup", "ALPHA", "mixup with lambda ~ Beta(ALPHA, ALPHA); 0 = off (e.g. 0.2)"),
    ("cutmix", "ALPHA", "CutMix with lambda ~ Beta(ALPHA, ALPHA); 0 = off (e.g. 1.0)"),
    ("label_smoothing", "S", "spread S of each target over all classes (e.g. 0.1)"),
)
_MIXING = ("mixup", "cutmix", "label_smoothing")


def add_augment_arguments(
    parser: argparse.ArgumentParser, include_preset: bool = True, include_mixing: bool = True
) -> None:
    """Add the augmentation flags; every default is None, meaning "as the preset says".

    Args:
        parser: The parser (or argument group owner) to extend.
        include_preset: Add ``--augment PRESET`` (preview has its own ``--preset``).
        include_mixing: Add ``--mixup``, ``--cutmix``, ``--label-smoothing`` (need labels).
    """
    group = parser.add_argument_group("augmentation (defaults come from the preset)")
    if include_preset:
        group.add_argument("--augment", metavar="PRESET", default=None,
                           help=f"augmentation preset: {', '.join(PRESETS)} (default: none)")
    boolean = argparse.BooleanOptionalAction
    group.add_argument("--hflip", action=boolean, default=None, help="random left-right mirror")
    group.add_argument("--vflip", action=boolean, default=None, help="random top-bottom mirror")
    for dest, metavar, text in _NUMBER_FLAGS:
        if dest in _MIXING and not include_mixing:
            continue
        group.add_argument("--" + dest.replace("_", "-"), dest=dest, type=float, default=None,
                           metavar=metavar, help=text)
    group.add_argument("--brightness", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                       help="multiply brightness by U[LO, HI] (e.g. 0.8 1.2)")
    group.add_argument("--contrast", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                       help="scale contrast by U[LO, HI] (e.g. 0.8 1.2)")
    group.add_argument("--fill-mode", dest="fill_mode", default=None,
                       help=f"how pixels moved in from outside are filled: {', '.join(FILL_MODES)}")
    group.add_argument("--policy", default=None,
                       help=f"automatic policy: {', '.join(POLICIES)} or none")


def augment_overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The augmentation fields set on the command line (absent flags are left out)."""
    out: dict[str, Any] = {}
    names = ["hflip", "vflip", "brightness", "contrast", "fill_mode"] + [d for d, _, _ in _NUMBER_FLAGS]
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    policy = getattr(args, "policy", None)
    if policy is not None:
        out["policy"] = None if policy.lower() == "none" else policy  # explicit "none" switches it off
    return out


def augment_config_from_args(args: argparse.Namespace, default_preset: str = "none") -> AugmentConfig:
    """Resolve ``--augment`` (or ``default_preset``) and apply the flag overrides.

    Raises:
        CnnlabError: Unknown preset or an out-of-range value, naming the flag.
    """
    preset = getattr(args, "augment", None) or default_preset
    return replace(resolve_augment(preset), **augment_overrides_from_args(args))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``augment preview TARGET`` on the main CLI's subparsers; returns the preview parser."""
    augment = subparsers.add_parser("augment", help="preview train-time augmentation")
    actions = augment.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "preview", help="draw augmented copies of an image or of images in a folder",
        description="An image file gives the lesson's 2x4 grid (plus a grid of random draws with "
                    "--preset or any flag); a folder gives random draws for a few of its images.",
    )
    p.add_argument("target", type=Path, metavar="TARGET", help="an image file or a folder of images")
    p.add_argument("--out", type=Path, default=Path("aug.png"), help="PNG to write (default: aug.png)")
    p.add_argument("--preset", dest="augment", default=None, metavar="NAME",
                   help=f"preset to draw from: {', '.join(PRESETS)} (folder default: lesson)")
    p.add_argument("--draws", type=int, default=6, help=f"random draws per image, 1-{_MAX_DRAWS} (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="seed for the draws (default: 0)")
    add_augment_arguments(p, include_preset=False, include_mixing=False)
    p.set_defaults(func=run)
    return p


def load_image(path: Path) -> np.ndarray:
    """Load an image as (H, W) grey or (H, W, 3) RGB uint8, shrunk to fit the preview."""
    try:
        with Image.open(path) as img:
            img = img.convert("L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB")
            img.thumbnail((_PREVIEW_SIDE, _PREVIEW_SIDE))
            return np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise CnnlabError(f"TARGET {path} could not be read as an image ({exc}); pass a .png/.jpg file") from exc


def find_images(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted for reproducible sampling."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _check(args: argparse.Namespace) -> None:
    """Refuse bad TARGET / --out / --draws with a one-line fix."""
    if not args.target.exists():
        raise CnnlabError(f"TARGET {args.target} does not exist; pass an image file or a folder of images")
    if args.out.suffix.lower() != ".png":
        raise CnnlabError(f"--out must end in .png, got {args.out}; e.g. --out aug.png")
    if not 1 <= args.draws <= _MAX_DRAWS:
        raise CnnlabError(f"--draws must be between 1 and {_MAX_DRAWS}, got {args.draws}")
    if args.augment is not None and args.augment not in PRESETS:  # here the flag is --preset
        raise CnnlabError(f"--preset must be one of {', '.join(PRESETS)}, got {args.augment!r}"
                          + suggest(args.augment, list(PRESETS)))


def run(args: argparse.Namespace) -> int:
    """Write the preview PNG(s) and print where; returns the exit code."""
    from cnnlab.augment.preview import lesson_preview, preset_preview  # matplotlib only when used

    _check(args)
    overrides = augment_overrides_from_args(args)
    written: list[Path] = []
    cfg = augment_config_from_args(args, default_preset="lesson")  # fail on bad values before writing
    if args.target.is_file():
        image = load_image(args.target)
        written.append(lesson_preview(image, args.out))
        if args.augment or overrides:
            draws_out = args.out.with_name(f"{args.out.stem}_{args.augment or 'custom'}{args.out.suffix}")
            written.append(preset_preview([image], cfg, args.draws, draws_out, seed=args.seed))
    else:
        files = find_images(args.target)
        if not files:
            raise CnnlabError(f"TARGET {args.target} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                              "pass a folder that contains some")
        picked = sorted(random.Random(args.seed).sample(files, min(_FOLDER_SAMPLES, len(files))))
        images = [load_image(p) for p in picked]
        classes = sorted({p.relative_to(args.target).parts[0] for p in files if p.parent != args.target})
        channels = 1 if all(im.ndim == 2 for im in images) else 3
        for warning in meaning_warnings(cfg, channels, classes):
            print(f"warning: {warning}", file=sys.stderr)
        written.append(preset_preview(images, cfg, args.draws, args.out, seed=args.seed))
    for path in written:
        print(f"wrote {path}")
    return 0
