"""``cnnlab export | quantize | prune | distill | benchmark``: shrink and speed up a run's model.

Each command calls one library function (``cnnlab.deploy``) and prints its before/after table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shlex
import sys
from typing import Any

from cnnlab.cli.options import (
    add_command_options,
    add_option,
    add_options,
    add_setup_arguments,
    command_options,
    given_options,
)
from cnnlab.cli.output import add_format_argument, print_output, progress_to_stderr
from cnnlab.config import all_options, options_by_dest
from cnnlab.deploy.settings import (
    PRUNED_STUDENT,
    BenchmarkOptions,
    DistillOptions,
    ExportOptions,
    PruneOptions,
    QuantizeOptions,
)

log = logging.getLogger("cnnlab")
RUN_HELP = "a run folder, e.g. runs/simple_cnn-mnist-sample"


def _distill_options() -> list[Any]:
    """The run options distill takes: the student is --student, and --threads is its own (timing)."""
    return [s for s in all_options() if s.dest not in ("model", "data", "threads")]


def add_parser(subparsers: Any) -> None:
    """Registers export, quantize, prune, distill and benchmark; each one's options come from its
    ``CommandOptions`` in ``deploy/settings.py``, where the Python API checks them too."""
    _add_export(subparsers)
    _add_quantize(subparsers)
    _add_prune(subparsers)
    _add_distill(subparsers)
    _add_benchmark(subparsers)


def _add_export(subparsers: Any) -> None:
    e = subparsers.add_parser(
        "export",
        help="write the run's model as ONNX or TorchScript, checked against it",
        description="Exports RUN's model to RUN/model.onnx (or model.ts) with its classes and "
        "preprocessing inside; fails if its outputs differ from the checkpoint's.",
    )
    e.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_command_options(e, ExportOptions)
    e.set_defaults(func=run_export)


def _add_quantize(subparsers: Any) -> None:
    q = subparsers.add_parser(
        "quantize",
        help="static INT8 with ONNX Runtime; table of size, speed, accuracy",
        description="Writes RUN/model.int8.onnx, calibrated on training images, and compares "
        "PyTorch, ONNX Runtime FP32 and INT8.",
    )
    q.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_command_options(q, QuantizeOptions)
    add_format_argument(q)
    q.set_defaults(func=run_quantize)


def _add_prune(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "prune",
        help="prune channels (or weights), fine-tune, compare before/after",
        description="Writes a pruned copy of RUN's model to RUN/pruned/<kind>-<percent>/, a run "
        "folder every command takes, and a before/after table.",
    )
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_command_options(p, PruneOptions)
    # The older spelling of --no-structured, kept so existing scripts keep working.
    p.add_argument(
        "--unstructured",
        dest="structured",
        action="store_false",
        default=argparse.SUPPRESS,
        help="same as --no-structured",
    )
    add_format_argument(p)
    p.set_defaults(func=run_prune)


def _add_distill(subparsers: Any) -> None:
    d = subparsers.add_parser(
        "distill",
        help="train a small student from a teacher; compare with the student alone",
        description="Trains the student alone and distilled from the teacher (same options and "
        "starting weights), then compares accuracy, size and speed of the three in the "
        "distilled run's report. The default student is the teacher with part of its channels "
        "pruned, starting from its weights.",
    )
    d.add_argument(
        "--teacher",
        required=True,
        metavar="RUN|MODEL",
        help="a run folder, or a pretrained model name (trained on DATA by transfer learning first)",
    )
    add_command_options(d, DistillOptions)
    add_format_argument(d)
    add_setup_arguments(d)
    _add_student_options(d)
    d.set_defaults(func=run_distill)


def _add_student_options(d: argparse.ArgumentParser) -> None:
    """The student's run options: --student is the run's --model, DATA defaults to the teacher's."""
    specs = options_by_dest()
    student = dataclasses.replace(
        specs["model"],
        flag="--student",
        default=PRUNED_STUDENT,
        help=(
            f"the student: {PRUNED_STUDENT} (a copy of the teacher with --student-sparsity of its channels removed, "
            "starting from its weights; no download), or any model name, e.g. mobilenetv3_small_100 (cnnlab models "
            "list)"
        ),
    )
    data = dataclasses.replace(
        specs["data"],
        help="the images to distil on (default: the teacher's data and "
        "split); another folder or CSV must have the teacher's classes",
    )
    add_option(d, student)
    add_option(d, data, positional_nargs="?")
    add_options(d, _distill_options(), positional_nargs="?")


def _add_benchmark(subparsers: Any) -> None:
    b = subparsers.add_parser(
        "benchmark",
        help="size, latency, throughput and accuracy of every runtime of a run",
        description="Times the checkpoint and every exported artifact of RUN side by side on "
        "its test split; predict then uses the fastest with the checkpoint's own outputs (INT8 "
        "with --runtime fastest, when it keeps accuracy).",
    )
    b.add_argument("run", metavar="RUN", help=RUN_HELP)
    add_command_options(b, BenchmarkOptions)
    add_format_argument(b)
    b.set_defaults(func=run_benchmark)


def run_export(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe, export_run

    print(describe(export_run(args.run, command_options(args, ExportOptions))))
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe
    from cnnlab.deploy.quantize import quantize_run

    options = command_options(args, QuantizeOptions)
    with progress_to_stderr(args.format):
        result = quantize_run(args.run, options)
    if result.exported is not None and args.format == "table":
        print(describe(result.exported))
    print_output(result.table, args.format)
    if args.format == "table":
        print(f"wrote {result.path}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from cnnlab.deploy.prune_run import prune_run

    command = "cnnlab " + shlex.join(sys.argv[1:])
    options = command_options(args, PruneOptions)
    with progress_to_stderr(args.format):
        result = prune_run(args.run, options, command)
    tables = [result.table]
    if result.sweep and args.format == "json":  # one document for a script: the sweep rides in the data
        tables = [dataclasses.replace(result.table, data={**result.table.data, "sweep": result.sweep.data})]
    elif result.sweep and args.format == "table":
        tables.insert(0, result.sweep)
    for table in tables:  # the warnings come last, once
        print_output(
            dataclasses.replace(table, notes=[n for n in table.notes if not n.startswith("WARNING: ")]), args.format
        )
    if args.format == "table":
        print(f"pruned run: {result.files.root}\nreport:     {result.files.report}")
    for warning in result.warnings:
        log.warning(warning)
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from cnnlab.deploy.distill_run import distill

    command = "cnnlab " + shlex.join(sys.argv[1:])
    settings = command_options(args, DistillOptions)
    with progress_to_stderr(args.format):
        options = given_options(args, [s for s in all_options() if s.dest != "threads"])  # --student is "model"
        result = distill(args.teacher, options, settings, args.recipe, args.config, args.augment, command)
    print_output(result.table, args.format)
    if args.format == "table":
        print(
            f"distilled run: {result.files.root}\nalone:         {result.alone.root}\n"
            f"report:        {result.files.report}"
        )
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from cnnlab.deploy.benchmark import benchmark_run

    table, _ = benchmark_run(args.run, command_options(args, BenchmarkOptions))
    print_output(table, args.format)
    return 0
