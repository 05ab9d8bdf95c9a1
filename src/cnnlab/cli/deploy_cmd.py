"""``cnnlab export | quantize | prune | distill | benchmark``: shrink and speed up a run's model.

Each command calls one library function (``cnnlab.deploy``) and prints its before/after table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import shlex
import sys
from typing import Any

from cnnlab.cli.options import add_option, add_options, add_setup_arguments, given_options
from cnnlab.cli.parser import positive_int, thread_count
from cnnlab.config import all_options, options_by_dest
from cnnlab.deploy.settings import (
    ALPHA,
    CALIBRATION_IMAGES,
    DEFAULT_THREADS,
    EXPORT_FORMATS,
    PARITY_TOLERANCE,
    PRUNED_STUDENT,
    STUDENT_SPARSITY,
    TEMPERATURE,
    THREADS_HELP,
)

RUN_HELP = "a run folder, e.g. runs/simple_cnn-mnist-sample"


def _threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table for people; json or csv for scripts (default: table)")


def _progress_to(fmt: str) -> Any:
    """Where progress (training epochs, summaries) goes: stderr when stdout is for a script."""
    return contextlib.nullcontext() if fmt == "table" else contextlib.redirect_stdout(sys.stderr)


def print_table(table: Any, fmt: str = "table") -> None:
    """A ``cnnlab.tables.Table`` as a Rich table with its notes, or as JSON / CSV on stdout."""
    if fmt == "json":
        json.dump(dataclasses.asdict(table), sys.stdout, indent=2, default=str)
        print()
        return
    if fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(table.columns)
        writer.writerows(table.rows)
        return
    if not sys.stdout.isatty():  # logs and pipes: a Markdown table, never wrapped to 80 columns
        print(table.markdown())
        return
    from rich.console import Console
    from rich.table import Table as RichTable

    shown = RichTable(*table.columns, title=table.title)
    for row in table.rows:
        shown.add_row(*map(str, row))
    console = Console()
    console.print(shown)
    for note in table.notes:
        console.print(f"- {note}", highlight=False)


def _distill_options() -> list[Any]:
    """The run options distill takes: the student is --student, and --threads is its own (timing)."""
    return [s for s in all_options() if s.dest not in ("model", "data", "threads")]


def add_parser(subparsers: Any) -> None:
    e = subparsers.add_parser("export", help="write the run's model as ONNX or TorchScript, checked against it",
                              description="Exports RUN's model to RUN/model.onnx (or model.ts) with its classes and "
                              "preprocessing inside; fails if its outputs differ from the checkpoint's.")
    e.add_argument("run", metavar="RUN", help=RUN_HELP)
    e.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="onnx (ONNX Runtime, fastest here) or "
                   "torchscript (deprecated by PyTorch, kept for C++/mobile) (default: onnx)")
    e.add_argument("--tolerance", type=float, default=PARITY_TOLERANCE, metavar="X",
                   help=f"largest |logit difference| allowed against the checkpoint (default: {PARITY_TOLERANCE:g})")
    _threads(e)
    e.set_defaults(func=run_export)

    q = subparsers.add_parser("quantize", help="static INT8 with ONNX Runtime; table of size, speed, accuracy",
                              description="Writes RUN/model.int8.onnx, calibrated on training images, and compares "
                              "PyTorch, ONNX Runtime FP32 and INT8.")
    q.add_argument("run", metavar="RUN", help=RUN_HELP)
    q.add_argument("--calibration", type=positive_int, default=CALIBRATION_IMAGES, metavar="N",
                   help=f"training images to calibrate on (default: {CALIBRATION_IMAGES})")
    _threads(q)
    _output(q)
    q.set_defaults(func=run_quantize)

    p = subparsers.add_parser("prune", help="prune channels (or weights), fine-tune, compare before/after",
                              description="Writes a pruned copy of RUN's model to RUN/pruned/<kind>-<percent>/, a run "
                              "folder every command takes, and a before/after table.")
    p.add_argument("run", metavar="RUN", help=RUN_HELP)
    p.add_argument("--sparsity", type=float, required=True, metavar="X",
                   help="fraction to remove, between 0 and 1: of each layer's channels (structured) or of all weights")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--structured", dest="structured", action="store_true", default=True,
                      help="remove whole channels: a smaller, faster network (default)")
    kind.add_argument("--unstructured", dest="structured", action="store_false",
                      help="zero single weights instead (same size and speed; for comparison)")
    p.add_argument("--finetune-epochs", type=int, default=0, metavar="N",
                   help="epochs of training after pruning, through cnnlab's trainer (default: 0)")
    p.add_argument("--finetune-lr", type=float, default=None, metavar="LR",
                   help="learning rate of that fine-tuning (default: the run's --lr)")
    _threads(p)
    _output(p)
    p.set_defaults(func=run_prune)

    d = subparsers.add_parser("distill", help="train a small student from a teacher; compare with the student alone",
                              description="Trains the student alone and distilled from the teacher (same options and "
                              "starting weights), then compares accuracy, size and speed of the three in the "
                              "distilled run's report. The default student is the teacher with part of its channels "
                              "pruned, starting from its weights.")
    d.add_argument("--teacher", required=True, metavar="RUN|MODEL",
                   help="a run folder, or a pretrained model name (trained on DATA by transfer learning first)")
    d.add_argument("--temperature", type=float, default=TEMPERATURE, metavar="T",
                   help=f"softens both models' outputs for the teacher term (default: {TEMPERATURE:g})")
    d.add_argument("--alpha", type=float, default=ALPHA, metavar="A",
                   help=f"weight of the teacher term; 1 - A goes to the labels (default: {ALPHA:g})")
    d.add_argument("--student-sparsity", type=float, default=STUDENT_SPARSITY, metavar="X",
                   help=f"--student {PRUNED_STUDENT}: the share of the teacher's channels removed, between 0 and 1 "
                   f"(default: {STUDENT_SPARSITY:g})")
    d.add_argument("--force", action="store_true",
                   help="go on with a student that is neither smaller nor faster than its teacher")
    _threads(d)
    _output(d)
    add_setup_arguments(d)
    specs = options_by_dest()
    student = dataclasses.replace(specs["model"], flag="--student", default=PRUNED_STUDENT, help=(
        f"the student: {PRUNED_STUDENT} (a copy of the teacher with --student-sparsity of its channels removed, "
        "starting from its weights; no download), or any model name, e.g. mobilenetv3_small_100 (cnnlab models "
        "list)"))
    data = dataclasses.replace(specs["data"], help="the images to distil on (default: the teacher's data and "
                               "split); another folder or CSV must have the teacher's classes")
    add_option(d, student)
    add_option(d, data, positional_nargs="?")
    add_options(d, _distill_options(), positional_nargs="?")
    d.set_defaults(func=run_distill)

    b = subparsers.add_parser("benchmark", help="size, latency, throughput and accuracy of every runtime of a run",
                              description="Times the checkpoint and every exported artifact of RUN side by side on "
                              "its test split; predict then uses the fastest that keeps accuracy.")
    b.add_argument("run", metavar="RUN", help=RUN_HELP)
    b.add_argument("--rounds", type=positive_int, default=20, metavar="N",
                   help="interleaved timing rounds at batch 1 (default: 20)")
    _threads(b)
    _output(b)
    b.set_defaults(func=run_benchmark)


def run_export(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe, export_run

    print(describe(export_run(args.run, args.format, args.tolerance, args.threads)))
    return 0


def run_quantize(args: argparse.Namespace) -> int:
    from cnnlab.deploy.export import describe
    from cnnlab.deploy.quantize import quantize_run

    with _progress_to(args.format):
        result = quantize_run(args.run, args.calibration, args.threads)
    if result.exported is not None and args.format == "table":
        print(describe(result.exported))
    print_table(result.table, args.format)
    if args.format == "table":
        print(f"wrote {result.path}")
    return 0


def run_prune(args: argparse.Namespace) -> int:
    from cnnlab.deploy.prune import prune_run

    command = "cnnlab " + shlex.join(sys.argv[1:])
    with _progress_to(args.format):
        result = prune_run(args.run, args.sparsity, args.structured, args.finetune_epochs, args.finetune_lr,
                           args.threads, command)
    print_table(result.table, args.format)
    if args.format == "table":
        print(f"pruned run: {result.files.root}\nreport:     {result.files.report}")
    return 0


def run_distill(args: argparse.Namespace) -> int:
    from cnnlab.deploy.distill import distill

    command = "cnnlab " + shlex.join(sys.argv[1:])
    with _progress_to(args.format):
        options = given_options(args, [s for s in all_options() if s.dest != "threads"])  # --student is "model"
        result = distill(args.teacher, options, args.temperature, args.alpha, args.recipe,
                         args.config, args.augment, args.threads, command, sparsity=args.student_sparsity,
                         force=args.force)
    print_table(result.table, args.format)
    if args.format == "table":
        print(f"distilled run: {result.files.root}\nalone:         {result.alone.root}\n"
              f"report:        {result.files.report}")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from cnnlab.deploy.benchmark import benchmark_run

    table, _ = benchmark_run(args.run, args.threads, args.rounds)
    print_table(table, args.format)
    return 0
