"""``cnnlab explain conv | pool | filters | feature-maps | gradcam | receptive-field``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.options import add_command_options, command_options
from cnnlab.cli.output import add_format_argument, print_output
from cnnlab.errors import plural
from cnnlab.explain.settings import ConvOptions, FeatureMapsOptions, FiguresOptions, GradcamOptions, PoolOptions
from cnnlab.tables import Table

RUN_HELP = "a run folder, e.g. runs/simple_cnn-mnist-sample"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``explain ACTION ...``; returns the ``explain`` parser. Each action's options come
    from its ``CommandOptions`` in ``explain/settings.py``, where ``cnnlab.explain`` checks them too."""
    explain = subparsers.add_parser(
        "explain",
        help="the lesson's pictures, and what a trained run looks at",
        description="Convolution and pooling, live; a run's filters, feature maps, Grad-CAM heat maps and "
        "receptive fields. Figures of a run go to RUN/explain/ unless --out is given.",
    )
    actions = explain.add_subparsers(dest="explain_command", metavar="ACTION", required=True)
    _add_lesson_demos(actions)
    _add_run_figures(actions)
    return explain


def _add_lesson_demos(actions: Any) -> None:
    """conv and pool: the lesson's numbers, or the user's image; no run needed."""
    conv = actions.add_parser(
        "conv",
        help="what 3x3 filters do to an image (the lesson's 6x6 edge, or yours)",
        description="Without --image: the lesson's 6x6 vertical-edge image through the "
        "vertical and horizontal edge filters, every number drawn. With --image: "
        "the filters on your image in grayscale.",
    )
    add_command_options(conv, ConvOptions)
    conv.set_defaults(func=run_conv)

    pool = actions.add_parser(
        "pool",
        help="what max and average pooling keep (the lesson's 4x4 map, or your image)",
        description="Without --image: the lesson's 4x4 feature map pooled 2x2, values in the "
        "cells. With --image: your image pooled 1, 2 and 3 times.",
    )
    add_command_options(pool, PoolOptions)
    pool.set_defaults(func=run_pool)


def _add_run_figures(actions: Any) -> None:
    """filters, feature-maps, gradcam and receptive-field: figures of a trained run."""
    filters = actions.add_parser(
        "filters",
        help="a run's first-layer kernels as an image grid",
        description="The kernels of the first convolution of RUN's network.",
    )
    filters.add_argument("run", metavar="RUN", type=Path, help=RUN_HELP)
    add_command_options(filters, FiguresOptions)
    filters.set_defaults(func=run_filters)

    maps = actions.add_parser(
        "feature-maps",
        help="what a few layers of a run's network output for your images",
        description="The most active channels of a few layers, early to late, per image.",
    )
    maps.add_argument("run", metavar="RUN", type=Path, help=RUN_HELP)
    maps.add_argument("images", metavar="IMG", nargs="+", help="image files and/or folders of images")
    add_command_options(maps, FeatureMapsOptions)
    maps.set_defaults(func=run_feature_maps)

    cam = actions.add_parser(
        "gradcam",
        help="where a run's network looks to classify your images",
        description="A Grad-CAM heat map per image over the last convolutional stage: red "
        "marks the regions whose features raised the class score.",
    )
    cam.add_argument("run", metavar="RUN", type=Path, help=RUN_HELP)
    cam.add_argument(
        "images",
        metavar="IMG",
        nargs="+",
        help="image files and/or folders (an image in a folder named like a class shows its true class)",
    )
    add_command_options(cam, GradcamOptions)
    add_format_argument(cam)
    cam.set_defaults(func=run_gradcam)

    field = actions.add_parser(
        "receptive-field",
        help="per-layer output size, stride and receptive field of a run",
        description="For each convolution and pooling layer: kernel, stride, output size, "
        "jump (input pixels between outputs) and receptive field, computed along "
        "the network's graph and checked against a real forward pass.",
    )
    field.add_argument("run", metavar="RUN", type=Path, help=RUN_HELP)
    add_command_options(field, FiguresOptions)
    add_format_argument(field)
    field.set_defaults(func=run_receptive_field)


def _print_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def run_conv(args: argparse.Namespace) -> int:
    from cnnlab.explain.demos import conv_demo

    demo = conv_demo(command_options(args, ConvOptions))
    print(demo.text)
    _print_written(demo.written)
    return 0


def run_pool(args: argparse.Namespace) -> int:
    from cnnlab.explain.demos import pool_demo

    demo = pool_demo(command_options(args, PoolOptions))
    print(demo.text)
    _print_written(demo.written)
    return 0


def run_filters(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_filters

    result = explain_filters(args.run, command_options(args, FiguresOptions))
    print(result.note)
    _print_written(result.written)
    return 0


def run_feature_maps(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_feature_maps

    result = explain_feature_maps(args.run, args.images, command_options(args, FeatureMapsOptions))
    print("layers: " + ", ".join(f"{row['layer']} ({row['output']})" for row in result.rows))
    _print_written(result.written)
    return 0


def _emit(rows: list[dict[str, Any]], fmt: str, title: str, shown: list[dict[str, Any]] | None = None) -> None:
    """``rows`` for scripts (JSON, CSV) or as a table of ``shown`` (default: ``rows``; fractions as percentages)."""
    shown = rows if shown is None else shown
    cells = [[f"{v:.1%}" if isinstance(v, float) else str(v) for v in row.values()] for row in shown]
    table = Table(title, [key.replace("_", " ") for key in shown[0]] if shown else [], cells)
    print_output(table, fmt, records=rows)


def run_gradcam(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_gradcam

    options = command_options(args, GradcamOptions)
    result = explain_gradcam(args.run, args.images, options)
    hidden = {"figure"} | (set() if options.class_name else {"explained"})  # the figure paths: one line below
    if all(row["evidence"] for row in result.rows):
        hidden.add("evidence")  # a column only when a map is flat (each also warned about above)
    _emit(
        result.rows,
        args.format,
        f"{options.method}: {result.note}",
        [{k: v for k, v in row.items() if k not in hidden} for row in result.rows],
    )
    if args.format != "table":
        return 0
    print(f"wrote {plural(len(result.written), 'figure')} to {result.written[0].parent}")
    return 0


def run_receptive_field(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_receptive_field

    result = explain_receptive_field(args.run, command_options(args, FiguresOptions))
    _emit(result.rows, args.format, "Receptive fields")
    if args.format == "table":
        print(result.note)
        _print_written(result.written)
    return 0
