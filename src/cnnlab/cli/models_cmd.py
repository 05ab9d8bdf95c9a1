"""``cnnlab models list``: which networks exist, how big they are, and where their weights are."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import JustifyMethod

DEFAULT_LIMIT = 50


def add_parser(subparsers: Any) -> None:
    """Registers ``models list [--pretrained] [--filter TEXT] [--limit N]``."""
    models = subparsers.add_parser("models", help="list available models", description="Available models.")
    commands = models.add_subparsers(dest="models_command", metavar="COMMAND", required=True)
    listing = commands.add_parser(
        "list", help="own CNNs, Keras aliases and timm models with sizes and weights",
        description="Own CNNs, the lesson's Keras names and timm models: parameters, default input "
        "size, and where ImageNet weights come from (built in, cached offline, or the hub).",
    )
    listing.add_argument("--pretrained", action="store_true", help="only models with ImageNet weights")
    listing.add_argument("--filter", default=None, metavar="TEXT",
                         help="timm names containing TEXT (wildcards * ? allowed), e.g. resnet")
    listing.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                         help=f"at most this many timm models (default {DEFAULT_LIMIT})")
    listing.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the table; returns the exit code."""
    from rich.console import Console
    from rich.table import Table

    from cnnlab.errors import CnnlabError
    from cnnlab.models.catalog import catalog

    if args.limit < 0:
        raise CnnlabError(f"--limit must be 0 or more, got {args.limit}")
    rows, left_out = catalog(args.pretrained, args.filter, args.limit)
    table = Table(title="cnnlab models")
    columns: tuple[tuple[str, JustifyMethod], ...] = (("name", "left"), ("timm model", "left"), ("params", "right"),
                                                      ("input px", "right"), ("ImageNet weights", "left"))
    for label, justify in columns:
        table.add_column(label, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console()
    console.print(table)
    if left_out:
        console.print(f"... and {left_out} more timm models; narrow with --filter or raise --limit")
    console.print("weights: built-in = shipped with cnnlab (offline); cached = in the local hub cache "
                  "(offline); hub = downloaded on first use (online); - = none")
    return 0
