"""``cnnlab experiment augmentation``: the lesson's exercise 3 as one command."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

from cnnlab.cli.train_cmd import add_run_arguments, config_from_args


def add_parser(subparsers: Any) -> None:
    experiment = subparsers.add_parser("experiment", help="train several runs and compare them")
    kinds = experiment.add_subparsers(dest="experiment", metavar="KIND", required=True)
    p = kinds.add_parser(
        "augmentation",
        help="the same model with and without augmentation (same seed, same epochs)",
        description="Trains twice, without and with augmentation (default: the lesson's preset), "
        "then overlays the curves and tables train/val/test accuracy and the train-val gap.",
    )
    add_run_arguments(p)
    p.set_defaults(func=run_augmentation)


def run_augmentation(args: argparse.Namespace) -> int:
    from rich.table import Table

    from cnnlab.cli.output import stdout_console
    from cnnlab.comparison.augmentation import augmentation_experiment
    from cnnlab.training.distributed import process_rank

    config = config_from_args(args)
    result = augmentation_experiment(config, "cnnlab " + shlex.join(sys.argv[1:]))
    if process_rank() != 0:  # several processes: rank 0 reports
        return 0
    table = Table(
        "augmentation",
        "epochs",
        "train acc",
        "val acc",
        "test acc",
        "train-val gap",
        title="With vs without augmentation",
    )
    for row in result.rows:
        gap = "-" if row["train_val_gap"] is None else f"{row['train_val_gap'] * 100:+.2f} pts"
        pct = lambda v: "-" if v is None else f"{v:.2%}"  # noqa: E731
        table.add_row(
            row["arm"], str(row["epochs"]), pct(row["train_acc"]), pct(row["val_acc"]), pct(row["test_acc"]), gap
        )
    stdout_console().print(table)
    print(f"curves:  {result.figure}")
    for row in result.rows:
        print(f"run ({row['arm']} augmentation): {row['run']}")
    return 0
