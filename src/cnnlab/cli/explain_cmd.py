"""``cnnlab explain conv | pool | filters | feature-maps | gradcam | receptive-field``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.output import add_format_argument, print_output
from cnnlab.cli.parser import positive_int
from cnnlab.errors import plural
from cnnlab.tables import Table

OUT_HELP = "folder for the figures (default: {})"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Registers ``explain ACTION ...``; returns the ``explain`` parser."""
    explain = subparsers.add_parser(
        "explain",
        help="the lesson's pictures, and what a trained run looks at",
        description="Convolution and pooling, live; a run's filters, feature maps, Grad-CAM heat maps and "
        "receptive fields. Figures of a run go to RUN/explain/ unless --out is given.",
    )
    actions = explain.add_subparsers(dest="explain_command", metavar="ACTION", required=True)

    conv = actions.add_parser(
        "conv",
        help="what 3x3 filters do to an image (the lesson's 6x6 edge, or yours)",
        description="Without --image: the lesson's 6x6 vertical-edge image through the "
        "vertical and horizontal edge filters, every number drawn. With --image: "
        "the filters on your image in grayscale.",
    )
    conv.add_argument("--image", type=Path, metavar="IMG", help="an image file to filter instead of the lesson's")
    conv.add_argument(
        "--filters",
        metavar="LIST",
        help="comma-separated from vertical, horizontal, sobel-v, sobel-h, laplacian, blur, sharpen "
        "(default: vertical,horizontal, the lesson's)",
    )
    conv.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help=OUT_HELP.format("."))
    conv.set_defaults(func=run_conv)

    pool = actions.add_parser(
        "pool",
        help="what max and average pooling keep (the lesson's 4x4 map, or your image)",
        description="Without --image: the lesson's 4x4 feature map pooled 2x2, values in the "
        "cells. With --image: your image pooled 1, 2 and 3 times.",
    )
    pool.add_argument("--image", type=Path, metavar="IMG", help="an image file to pool instead of the lesson's map")
    pool.add_argument("--size", type=positive_int, default=2, help="window side and stride (default: 2)")
    pool.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help=OUT_HELP.format("."))
    pool.set_defaults(func=run_pool)

    filters = actions.add_parser(
        "filters",
        help="a run's first-layer kernels as an image grid",
        description="The kernels of the first convolution of RUN's network.",
    )
    _run_argument(filters)
    filters.set_defaults(func=run_filters)

    maps = actions.add_parser(
        "feature-maps",
        help="what a few layers of a run's network output for your images",
        description="The most active channels of a few layers, early to late, per image.",
    )
    _run_argument(maps)
    maps.add_argument("images", metavar="IMG", nargs="+", help="image files and/or folders of images")
    maps.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="a layer to show (repeat for more; default: a few stages spread from early to late)",
    )
    maps.set_defaults(func=run_feature_maps)

    cam = actions.add_parser(
        "gradcam",
        help="where a run's network looks to classify your images",
        description="A Grad-CAM heat map per image over the last convolutional stage: red "
        "marks the regions whose features raised the class score.",
    )
    _run_argument(cam)
    cam.add_argument(
        "images",
        metavar="IMG",
        nargs="+",
        help="image files and/or folders (an image in a folder named like a class shows its true class)",
    )
    cam.add_argument(
        "--class", dest="class_name", metavar="NAME", help="explain this class instead of each image's predicted one"
    )
    cam.add_argument(
        "--method",
        choices=("gradcam", "gradcam++", "eigencam"),
        default="gradcam",
        help="gradcam (default), gradcam++ (several objects), eigencam (no gradient: class-agnostic)",
    )
    cam.add_argument("--layer", metavar="NAME", help="the layer to explain (default: the last convolutional stage)")
    add_format_argument(cam)
    cam.set_defaults(func=run_gradcam)

    field = actions.add_parser(
        "receptive-field",
        help="per-layer output size, stride and receptive field of a run",
        description="For each convolution and pooling layer: kernel, stride, output size, "
        "jump (input pixels between outputs) and receptive field, computed along "
        "the network's graph and checked against a real forward pass.",
    )
    _run_argument(field)
    add_format_argument(field)
    field.set_defaults(func=run_receptive_field)
    return explain


def _run_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", type=Path, help="a run folder, e.g. runs/simple_cnn-mnist-sample")
    parser.add_argument("--out", type=Path, metavar="DIR", help=OUT_HELP.format("RUN/explain"))


def _print_written(paths: list[Path]) -> None:
    for path in paths:
        print(f"wrote {path}")


def run_conv(args: argparse.Namespace) -> int:
    from cnnlab.explain.demos import conv_demo

    demo = conv_demo(args.image, args.filters, args.out)
    print(demo.text)
    _print_written(demo.written)
    return 0


def run_pool(args: argparse.Namespace) -> int:
    from cnnlab.explain.demos import pool_demo

    demo = pool_demo(args.image, args.size, args.out)
    print(demo.text)
    _print_written(demo.written)
    return 0


def run_filters(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_filters

    result = explain_filters(args.run, args.out)
    print(result.note)
    _print_written(result.written)
    return 0


def run_feature_maps(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_feature_maps

    result = explain_feature_maps(args.run, args.images, args.layer, args.out)
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

    result = explain_gradcam(args.run, args.images, args.class_name, args.method, args.layer, args.out)
    hidden = {"figure"} | (set() if args.class_name else {"explained"})  # the figure paths: one line below
    if all(row["evidence"] for row in result.rows):
        hidden.add("evidence")  # a column only when a map is flat (each also warned about above)
    _emit(
        result.rows,
        args.format,
        f"{args.method}: {result.note}",
        [{k: v for k, v in row.items() if k not in hidden} for row in result.rows],
    )
    if args.format != "table":
        return 0
    print(f"wrote {plural(len(result.written), 'figure')} to {result.written[0].parent}")
    return 0


def run_receptive_field(args: argparse.Namespace) -> int:
    from cnnlab.explain.commands import explain_receptive_field

    result = explain_receptive_field(args.run, args.out)
    _emit(result.rows, args.format, "Receptive fields")
    if args.format == "table":
        print(result.note)
        _print_written(result.written)
    return 0
