"""``cnnlab models list``: which networks exist, how big they are, and where their weights are."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_LIMIT = 50


def add_parser(subparsers: Any) -> None:
    """Registers ``models list [--pretrained] [--filter TEXT] [--limit N]``."""
    models = subparsers.add_parser("models", help="list available models", description="Available models.")
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list",
        help="own CNNs, Keras aliases and timm models with sizes and weights",
        description="Own CNNs, the lesson's Keras names and timm models: parameters, default input "
        "size, and where ImageNet weights come from (built in, cached offline, or the hub).",
    )
    listing.add_argument("--pretrained", action="store_true", help="only models with ImageNet weights")
    listing.add_argument(
        "--filter",
        default=None,
        metavar="TEXT",
        help="only names containing TEXT (own CNNs, the lesson's names and timm's; wildcards * ? allowed), e.g. resnet",
    )
    listing.add_argument(
        "--limit", type=int, default=DEFAULT_LIMIT, help=f"at most this many timm models (default {DEFAULT_LIMIT})"
    )
    listing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the table; returns the exit code."""
    from cnnlab.cli.output import print_table
    from cnnlab.errors import CnnlabError
    from cnnlab.models.catalog import catalog
    from cnnlab.tables import Table

    if args.limit < 0:
        raise CnnlabError(f"--limit must be 0 or more, got {args.limit}")
    rows, left_out = catalog(args.pretrained, args.filter, args.limit)
    notes = [f"... and {left_out} more timm models; narrow with --filter or raise --limit"] if left_out else []
    notes.append(
        "weights: built-in = shipped with cnnlab (offline); cached = in the local hub cache (offline); "
        "hub = downloaded on first use (online); - = none"
    )
    print_table(Table("cnnlab models", ["name", "timm model", "params", "input px", "ImageNet weights"], rows, notes))
    return 0
