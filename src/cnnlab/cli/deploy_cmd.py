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

from cnnlab.cli.options import add_option, add_options, add_setup_arguments, given_options
from cnnlab.cli.output import add_format_argument, print_output, progress_to_stderr
from cnnlab.cli.parser import positive_int, thread_count
from cnnlab.config import all_options, options_by_dest
from cnnlab.deploy.settings import (
    ALPHA,
    CALIBRATION_IMAGES,
    DEFAULT_THREADS,
    EXPORT_FORMATS,
    FINETUNE_BUDGET,
    FINETUNE_EPOCHS,
    MAX_DROP,
    PARITY_TOLERANCE,
    PRUNED_STUDENT,
    STUDENT_SPARSITY,
    TEMPERATURE,
    THREADS_HELP,
)

log = logging.getLogger("cnnlab")
RUN_HELP = "a run folder, e.g. runs/simple_cnn-mnist-sample"


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)


def _distill_options() -> list[Any]:
    """The run options distill takes: the student is --student, and --threads is its own (timing)."""
    return [s for s in all_options() if s.dest not in ("model", "data", "threads")]


def add_parser(subparsers: Any) -> None:
    e = subparsers.add_parser(
        "export",
        help="write the run's model as ONNX or TorchScript, checked against it",
        description="Exports RUN's model to RUN/model.onnx (or model.ts) with its classes and "
        "preprocessing inside; fails if its outputs differ from the checkpoint's.",
    )
    e.add_argument("run", metavar="RUN", help=RUN_HELP)
    e.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="onnx",
        help="onnx (ONNX Runtime, fastest here) or "
        "torchscript (deprecated by PyTorch, kept for C++/mobile) (default: onnx)",
    )
    e.add_argument(
        "--tolerance",
        type=float,
        default=PARITY_TOLERANCE,
        metavar="X",
        help=f"largest |logit difference| allowed against the checkpoint (default: {PARITY_TOLERANCE:g})",
    )
    _threads(e)
    e.set_defaults(func=run_export)

    q = subparsers.add_parser(
        "quantize",
        help="static INT8 with ONNX Runtime; table of size, speed, accuracy",
        description="Writes RUN/model.int8.onnx, calibrated on training images, and compares "
        "PyTorch, ONNX Runtime FP32 and INT8.",
    )
    q.add_argument("run", metavar="RUN", help=RUN_HELP)
    q.add_argument(
        "--calibration",
        type=positive_int,
        default=CALIBRATION_IMAGES,
        metavar="N",
        help=f"training images to calibrate on (default: {CALIBRATION_IMAGES})",
    )
    _threads(q)
    add_format_argument(q)
    q.set_defaults(func=run_quantize)

    p = subparsers.add_parser(
        "prune",
        help="prune channels (or weights), fine-tune, compare before/after",
        description="Writes a pruned copy of RUN's model to RUN/pruned/<kind>-<percent>/, a run "
        "folder every command takes, and a before/after table.",
    )
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--sparsity",
        type=float,
        default=None,
        metavar="X",
        help="fraction to remove, between 0 and 1: of each layer's channels (structured) or of all weights",
    )
    p.add_argument(
        "--max-drop",
        type=float,
        default=None,
        metavar="POINTS",
        help="without --sparsity: the largest sparsity (10-80%%) that loses at most POINTS of validation "
        "accuracy, found by bisection and drawn as a curve; with it: the drop that is warned about "
        f"(default: {MAX_DROP:g})",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--structured",
        dest="structured",
        action="store_true",
        default=True,
        help="remove whole channels: a smaller, faster network (default)",
    )
    kind.add_argument(
        "--unstructured",
        dest="structured",
        action="store_false",
        help="zero single weights instead (same size and speed; for comparison)",
    )
    p.add_argument(
        "--finetune-epochs",
        type=int,
        default=FINETUNE_EPOCHS,
        metavar="N",
        help="most epochs of fine-tuning after pruning; it stops sooner once validation accuracy is back "
        "to the original's or stops improving, keeping its best epoch; 0: none "
        f"(default: {FINETUNE_EPOCHS})",
    )
    p.add_argument(
        "--finetune-budget",
        type=float,
        default=FINETUNE_BUDGET,
        metavar="SECONDS",
        help=f"most seconds of fine-tuning for each pruned model (default: {FINETUNE_BUDGET:g})",
    )
    p.add_argument(
        "--finetune-lr",
        type=float,
        default=None,
        metavar="LR",
        help="learning rate of that fine-tuning, every layer training (default: the run's --lr)",
    )
    _threads(p)
    add_format_argument(p)
    p.set_defaults(func=run_prune)

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
    d.add_argument(
        "--temperature",
        type=float,
        default=TEMPERATURE,
        metavar="T",
        help=f"softens both models' outputs for the teacher term (default: {TEMPERATURE:g})",
    )
    d.add_argument(
        "--alpha",
        type=float,
        default=ALPHA,
        metavar="A",
        help=f"weight of the teacher term; 1 - A goes to the labels (default: {ALPHA:g})",
    )
    d.add_argument(
        "--student-sparsity",
        type=float,
        default=STUDENT_SPARSITY,
        metavar="X",
        help=f"--student {PRUNED_STUDENT}: the share of the teacher's channels removed, between 0 and 1 "
        f"(default: {STUDENT_SPARSITY:g})",
    )
    d.add_argument(
        "--force", action="store_true", help="go on with a student that is neither smaller nor faster than its teacher"
    )
    _threads(d)
    add_format_argument(d)
    add_setup_arguments(d)
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
    d.set_defaults(func=run_distill)

    b = subparsers.add_parser(
        "benchmark",
        help="size, latency, throughput and accuracy of every runtime of a run",
        description="Times the checkpoint and every exported artifact of RUN side by side on "
        "its test split; predict then uses the fastest with the checkpoint's own outputs (INT8 "
        "with --runtime fastest, when it keeps accuracy).",
    )
    b.add_argument("run", metavar="RUN", help=RUN_HELP)
    b.add_argument(
        "--rounds",
        type=positive_int,
        default=20,
        metavar="N",
        help="interleaved timing rounds at batch 1 (default: 20)",
    )
    _threads(b)
    add_format_argument(b)
    b.set_defaults(func=run_benchmark)


def run_export(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe, export_run

    print(describe(export_run(args.run, args.format, args.tolerance, args.threads)))
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe
    from cnnlab.deploy.quantize import quantize_run

    with progress_to_stderr(args.format):
        result = quantize_run(args.run, args.calibration, args.threads)
    if result.exported is not None and args.format == "table":
        print(describe(result.exported))
    print_output(result.table, args.format)
    if args.format == "table":
        print(f"wrote {result.path}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from cnnlab.deploy.prune_run import FineTuning, prune_run

    command = "cnnlab " + shlex.join(sys.argv[1:])
    tuning = FineTuning(args.finetune_epochs, args.finetune_budget, args.finetune_lr)
    with progress_to_stderr(args.format):
        result = prune_run(
            args.run, args.sparsity, args.structured, tuning, args.threads, command, max_drop=args.max_drop
        )
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
    with progress_to_stderr(args.format):
        options = given_options(args, [s for s in all_options() if s.dest != "threads"])  # --student is "model"
        result = distill(
            args.teacher,
            options,
            args.temperature,
            args.alpha,
            args.recipe,
            args.config,
            args.augment,
            args.threads,
            command,
            sparsity=args.student_sparsity,
            force=args.force,
        )
    print_output(result.table, args.format)
    if args.format == "table":
        print(
            f"distilled run: {result.files.root}\nalone:         {result.alone.root}\n"
            f"report:        {result.files.report}"
        )
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from cnnlab.deploy.benchmark import benchmark_run

    table, _ = benchmark_run(args.run, args.threads, args.rounds)
    print_output(table, args.format)
    return 0
