"""``cnnlab tune DATA --time-budget S``: search the options that matter within a time budget (Optuna)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from cnnlab.cli.parser import number_at_least, positive_int
from cnnlab.cli.train_cmd import add_run_arguments, config_from_args
from cnnlab.errors import CnnlabError, plural


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "tune",
        help="search learning rate, augmentation, epochs, ... within a time budget (Optuna)",
        description="Searches the options that matter (learning rate, weight decay, augmentation preset and "
        "strength, label smoothing, batch size; epochs from scratch; fine-tuning blocks, rate and epochs with "
        "--pretrained) around the run the other options describe, which is trial 0. Every trial is a normal run "
        "folder trained by cnnlab train's path on a share of the budget; Optuna's pruner stops poor ones from "
        "their validation accuracy epoch by epoch. Trials are compared on the validation split; the test split "
        "is scored once, for the best. The study is kept in OUT/study.db: after Ctrl-C or a kill the same "
        "command continues it. Writes trials.csv, history.png, importance.png and best.yaml (cnnlab train DATA "
        "--config OUT/best.yaml).",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="the search's folder (default: tune/<model>-<data>; an existing study there is continued)",
    )
    p.add_argument(
        "--trial-budget",
        type=number_at_least(0, strict=True),
        metavar="SECONDS",
        help="seconds of training per trial (default: a sixth of --time-budget)",
    )
    p.add_argument(
        "--trials", type=positive_int, metavar="N", help="stop after N more trials (default: when the budget is spent)"
    )
    add_run_arguments(p, data_nargs=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.api import tune
    from cnnlab.training.run_fit import TrainingInterrupted

    config = config_from_args(args)
    if config.train.time_budget is None:
        raise CnnlabError("cnnlab tune needs --time-budget SECONDS: the time the whole search may take")
    command = "cnnlab " + shlex.join(sys.argv[1:])
    try:
        result = tune(
            settings=config, out=args.out, trial_budget=args.trial_budget, trials=args.trials, command=command
        )
    except TrainingInterrupted as stop:
        print(f"\ninterrupted: {stop.saved}; continue with: {command}")
        return 130
    _print(result, config)
    return 0


def _print(result: Any, config: Any) -> None:
    from rich.table import Table

    from cnnlab.cli.output import print_wide, stdout_console
    from cnnlab.tuning.space import changed_flags

    console = stdout_console()
    params = sorted({k for row in result.trials for k in row if k.startswith("param_")})
    table = Table(
        "trial",
        "state",
        "val acc",
        "val loss",
        "epochs run",
        "s",
        *[p[6:] for p in params],
        title=f"{plural(len(result.trials), 'trial')} in {result.seconds_used:.0f} s of {result.budget:g} s",
    )
    for row in result.trials:
        cells = [_cell(row.get(p)) for p in params]
        name = f"{row['trial']}" + (" (yours)" if row["baseline"] else "")
        table.add_row(
            name,
            row["state"],
            _cell(row["val_acc"], pct=True),
            _cell(row["val_loss"]),
            _cell(row["epochs"]),
            _cell(row["seconds"]),
            *cells,
        )
    print_wide(console, table)
    for note in result.notes:
        print(note)
    if result.best is None:
        return
    baseline = next((r for r in result.trials if r["baseline"] and r["state"] == "complete"), None)
    gain = (
        ""
        if baseline is None
        else (
            f" ({100 * (result.best['val_acc'] - baseline['val_acc']):+.2f} points over "
            f"your options, trial {baseline['trial']})"
        )
    )
    print(
        f"best: trial {result.best['trial']}, validation accuracy {result.best['val_acc']:.2%}{gain}; "
        f"test accuracy {result.test_accuracy:.2%} (the test split, scored once for the best)"
    )
    flags = changed_flags(config, result.best_config)
    print(
        "train it: cnnlab train " + " ".join(map(str, [config.data.source, *flags]))
        if flags
        else f"train it: cnnlab train {config.data.source} (your options won)"
    )
    print(f"     or: cnnlab train {config.data.source} --config {result.files.best_yaml}")
    print(f"trials: {result.files.trials_csv}  plots: {result.files.history}, {result.files.importance}")


def _cell(value: Any, pct: bool = False) -> str:
    if value is None or value == "":
        return "-"
    if pct and isinstance(value, float):
        return f"{value:.2%}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)
