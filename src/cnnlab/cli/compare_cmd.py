"""``cnnlab compare MODEL...``: architectures side by side, measured here (and trained with --data)."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

from cnnlab.cli.options import add_options, add_setup_arguments, given_options
from cnnlab.cli.output import add_format_argument, print_output, progress_to_stderr
from cnnlab.cli.parser import positive_int
from cnnlab.comparison.options import DEFAULT_BATCH, DEFAULT_IMAGE_SIZE, DEFAULT_REPEATS, compare_models, parse_weights
from cnnlab.config import FieldSpec, all_options
from cnnlab.errors import plural
from cnnlab.tables import Table

_OWN_FLAGS = {"model", "weights", "name", "runs_dir", "threads"}  # MODEL..., --weights MODEL=FILE, --out, --threads
_HELP = {
    "image_size": f"input side in px for every model, measured and trained (default {DEFAULT_IMAGE_SIZE})",
    "batch_size": f"batch of the throughput and memory figures (default {DEFAULT_BATCH}); with --data also "
    "the training batch (default there: train's 128)",
    "pretrained": "ImageNet weights where they can be had (built in for efficientnet_lite0, cached, or the hub): "
    "measured with them and, with --data, the transfer path; the others random / from scratch",
}


def _specs() -> list[FieldSpec]:
    """The run options compare takes, from the one schema: DATA as --data, some help in compare's terms."""
    specs = []
    for spec in all_options():
        if spec.dest in _OWN_FLAGS:
            continue
        if spec.dest == "data":
            spec = dataclasses.replace(
                spec,
                flag="--data",
                help="train and test every model on this image folder, CSV or built-in set (default: measure only)",
            )
        elif spec.dest in _HELP:
            spec = dataclasses.replace(spec, help=_HELP[spec.dest])
        specs.append(spec)
    return specs


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "compare",
        help="compare architectures: size, MACs, speed, memory and accuracy side by side",
        description="Measures each model on this machine (parameters, layers, MACs, FP32 size, latency at "
        "batch 1, throughput, forward memory), cites its ImageNet top-1, and with --data trains every model "
        "the same way on your images. Writes comparison.csv, comparison.md and comparison.png.",
    )
    p.add_argument(
        "models",
        metavar="MODEL",
        nargs="+",
        help="simple_cnn, fast_cnn, a Keras name (vgg16, resnet50, mobilenetv2, efficientnet_lite0) or any timm name",
    )
    group = p.add_argument_group("comparison")
    group.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="torch threads while measuring (default: cnnlab's thread policy: the cores other processes "
        "leave free, the same for every model)",
    )
    group.add_argument(
        "--repeats",
        type=positive_int,
        default=DEFAULT_REPEATS,
        metavar="N",
        help=f"timed forward passes per figure, at most 10 s' worth (default {DEFAULT_REPEATS})",
    )
    group.add_argument(
        "--weights",
        metavar="MODEL=FILE",
        action="append",
        default=[],
        help="a local .safetensors/.pth state dict for one MODEL (repeatable)",
    )
    group.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder for the files and run folders (default: a new comparisons/<models>)",
    )
    add_format_argument(group, description="table for people; json or csv on stdout for scripts (default: table)")
    add_setup_arguments(p)
    add_options(p, _specs())
    p.set_defaults(func=run)


def _table(comparison: Any) -> Table:
    """The architectures side by side as people read them (the compact columns), footnotes as notes."""
    from cnnlab.comparison.columns import cell, display_columns, footnotes

    s = comparison.settings
    columns = display_columns(s.batch_size, comparison.trained, compact=True)
    title = f"{plural(len(comparison.rows), 'architecture')} at {s.image_size} px, "
    return Table(
        title + plural(comparison.threads, "thread"),
        [label for _, label in columns],
        [[cell(row, key, compact=True) for key, _ in columns] for row in comparison.rows],
        notes=footnotes(comparison.rows),
    )


def _print_how(comparison: Any, console: Any) -> None:
    """Under the table: a busy machine's warning, how each figure was measured, and the files."""
    if comparison.busy:
        console.print(
            f"[bold]measured on a busy machine: rerun when it is quiet to rank the models by speed[/bold] "
            f"({comparison.busy})"
        )
    how = comparison.how
    lines = [f"{key}: {how[key]}" for key in ("layers", "weights", "imagenet")]
    lines += [f"training: {comparison.same_way}"] if comparison.same_way else []
    lines += [f"machine: {comparison.machine}", *(f"{kind}: {path}" for kind, path in comparison.files.items())]
    for line in lines:
        console.print(line, highlight=False, markup=False)


def run(args: argparse.Namespace) -> int:
    from cnnlab.comparison.columns import CSV_FIELDS

    command = "cnnlab " + shlex.join(sys.argv[1:])
    with progress_to_stderr(args.format):  # stdout carries only the JSON or CSV: training's lines go to stderr
        comparison = compare_models(
            args.models,
            given_options(args, _specs()),
            recipe=args.recipe,
            config=args.config,
            augment=args.augment,
            threads=args.threads,
            repeats=args.repeats,
            weights=parse_weights(args.weights),
            out=args.out,
            command=command,
        )
    console = print_output(
        _table(comparison), args.format, records=comparison.rows, fields=CSV_FIELDS, json_data=comparison.as_json()
    )
    if console is not None:
        _print_how(comparison, console)
    if comparison.interrupted:
        return 130
    if not any(row.get("status") == "ok" for row in comparison.rows):
        print("cnnlab compare: error: no model could be measured (see the note column)", file=sys.stderr)
        return 2
    return 0
