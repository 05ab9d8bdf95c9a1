"""``cnnlab augment preview``: what the augmentation options do to your own images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.options import add_options, given_options
from cnnlab.config import MIXING_FIELDS, PRESETS, SECTIONS, augment_from_options
from cnnlab.config.schema import field_specs

MAX_DRAWS = 16


def _preview_options() -> list:
    """The augmentation options that act on one image (mixing needs a labelled batch)."""
    return [s for s in field_specs(SECTIONS["augment"], "augment") if s.name not in MIXING_FIELDS]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``augment preview TARGET``; returns the preview parser."""
    augment = subparsers.add_parser("augment", help="preview train-time augmentation")
    actions = augment.add_subparsers(dest="augment_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "preview",
        help="draw augmented copies of an image or of images in a folder",
        description="An image file gives a grid of each operation alone, at the edge of its range (the lesson "
        "preset's by default, else --augment's and the options'), plus a grid of random draws with "
        "--augment or any option; a folder gives random draws for a few of its images.",
    )
    p.add_argument("target", type=Path, metavar="IMAGE", help="an image file or a folder of images")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="folder for augmentation.png (and augmentation_draws.png) (default: .)",
    )
    p.add_argument(
        "--augment",
        choices=list(PRESETS),
        default=None,
        help="preset to draw from (default: lesson for a folder; none besides the options for an image)",
    )
    p.add_argument("--draws", type=int, default=6, help=f"random draws per image, 1-{MAX_DRAWS} (default: 6)")
    p.add_argument("--seed", type=int, default=0, help="seed for the draws (default: 0)")
    add_options(p, _preview_options())
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Writes the preview PNG(s) and prints where; returns the exit code."""
    import sys

    from cnnlab.augment.preview import preview_target
    from cnnlab.errors import CnnlabError

    if not 1 <= args.draws <= MAX_DRAWS:
        raise CnnlabError(f"--draws must be between 1 and {MAX_DRAWS}, got {args.draws}")
    options = given_options(args, _preview_options())
    config = augment_from_options(args.augment, "lesson", **options)  # checked before any image is read
    result = preview_target(
        args.target, config, args.out, draws=args.draws, seed=args.seed, draw_grid=bool(args.augment or options)
    )
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for path in result.written:
        print(f"wrote {path}")
    return 0
