"""``cnnlab train``: flags become a config; one call trains, evaluates and reports."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import TYPE_CHECKING, Any

from cnnlab.cli.options import add_options, add_setup_arguments, given_options
from cnnlab.cli.startup import collector_paused
from cnnlab.config import RunConfig, all_options, build_config
from cnnlab.data.sources import check_source
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.training.record import RunRecord


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "train",
        help="train a CNN on an image folder or a built-in data set",
        description="Train, evaluate on the test split, and write runs/<name>/ with a report.",
    )
    p.add_argument("--resume", metavar="RUN", help="continue a stopped run from its last checkpoint")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print the model's layer table (it is in the run folder's model_summary.txt), each "
        "stage's trainable modules and every epoch's line (default: the slow ones)",
    )
    add_run_arguments(p, data_nargs="?")
    p.set_defaults(func=run)
    return p


def add_run_arguments(p: argparse.ArgumentParser, data_nargs: str | None = None) -> None:
    """Every option of a training run (shared by ``train`` and the experiments)."""
    add_setup_arguments(p)
    add_options(p, all_options(), positional_nargs=data_nargs)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Defaults, then ``--recipe``, ``--config`` YAML and ``--augment``, then the flags given."""
    return build_config(
        recipe=args.recipe, config_file=args.config, augment=args.augment, **given_options(args, all_options())
    )


def run(args: argparse.Namespace) -> int:
    import cnnlab.phases as phases

    phases.begin(with_startup=True)
    if args.verbose:  # the console's extra detail (cnnlab.training.console.verbose); not a run option
        logging.getLogger("cnnlab").setLevel(logging.DEBUG)
    if args.data is not None and not args.resume:
        check_source(args.data)  # a mistyped DATA is told at once, not after seconds of imports
    with phases.phase("start-up"), collector_paused(keep=True):  # importing torch and Lightning is most of start-up
        from cnnlab.api import resume, run_training
        from cnnlab.training.distributed import process_rank
        from cnnlab.training.record import RunRecord
        from cnnlab.training.run_dir import read_optional_json
        from cnnlab.training.run_fit import TrainingInterrupted

    if args.resume:
        if given_options(args, all_options()) or args.config or args.recipe or args.augment:
            raise CnnlabError("--resume continues a run with its saved options; drop the other options")
    elif args.data is None:
        raise CnnlabError("no data given; e.g. cnnlab train mnist-sample, or --resume runs/<name>")
    try:
        if args.resume:
            result = resume(args.resume)
        else:
            result = run_training(config_from_args(args), "cnnlab " + shlex.join(sys.argv[1:]))
    except TrainingInterrupted as stop:
        if process_rank() != 0:  # rank 0 tells the user; a non-zero code here would make the launcher kill it
            return 0
        _print_results(RunRecord.from_json(read_optional_json(stop.files.meta)))
        report = f"; report: {stop.files.report}" if stop.files.report.is_file() else ""
        print(f"\ninterrupted: {stop.saved}{report}")
        print(f"resume with: cnnlab train --resume {stop.files.root}")
        return 130
    if process_rank() != 0:  # only rank 0 speaks
        return 0
    metrics = result.metrics
    record = result.record
    if record.timing.phases:
        print("\n" + phases.phase_line(record.timing.phases, record.timing.total_seconds))
    _print_results(record)
    print(f"\ntest accuracy {metrics['accuracy']:.2%}  loss {metrics['loss']:.4f}")
    print(f"run folder: {result.path}")
    print(f"report:     {result.report_path}")
    tracking = record.tracking or {}
    if tracking.get("run_id"):
        from cnnlab.training.tracking import ui_command

        print(f"MLflow:     run {tracking['run_id']} in '{tracking['experiment']}'; {ui_command(tracking['uri'])}")
    return 0


def _print_results(record: RunRecord) -> None:
    """Each stage's validation and test result, when there were several or one was interrupted."""
    from cnnlab.training.console import results_lines

    stages = record.stages
    if len(stages) > 1 or (stages and not stages[-1].done):
        print("\n" + "\n".join(results_lines(record)))
