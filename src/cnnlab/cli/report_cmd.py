"""`cnnlab report RUN`, `cnnlab runs compare RUN [RUN ...]` and `cnnlab runs list`."""

from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import Any

from cnnlab.cli.output import add_format_argument, print_output, stdout_console
from cnnlab.errors import plural
from cnnlab.tables import Table

COLUMNS = [
    ("run", "Run"),
    ("model", "Model"),
    ("data", "Data"),
    ("epochs", "Epochs"),
    ("kept_val_acc", "Val acc (kept)"),
    ("test_acc", "Test acc"),
    ("params", "Params"),
    ("train_seconds", "Train time"),
]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers `report RUN [--open]`."""
    parser = subparsers.add_parser(
        "report",
        help="rebuild a run's self-contained HTML report",
        description="Rebuild RUN/report.html from the files in a run folder (missing figures are redrawn; "
        "the Explain figures from the checkpoint and the test images).",
    )
    parser.add_argument("run", metavar="RUN", type=Path, help="a run folder, e.g. runs/simple_cnn-mnist-sample")
    parser.add_argument("--open", action="store_true", help="open the report in the default web browser")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Writes the report and optionally opens it; returns the exit code."""
    from cnnlab.evaluation.run_evaluation import write_run_report

    console = stdout_console()
    path = write_run_report(args.run)
    # soft_wrap: a long path is never broken by an inserted newline (a pipe got "report.\nhtml")
    console.print(f"Report written to [bold]{path}[/bold]", soft_wrap=True)
    if getattr(args, "open", False):
        try:
            opened = webbrowser.open(path.resolve().as_uri())
        except webbrowser.Error:
            opened = False
        if not opened:
            console.print(f"No web browser available here: open {path} yourself.", soft_wrap=True)
    return 0


def add_runs_parser(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """Registers `runs compare RUN [RUN ...] [--out DIR]`; returns the `runs` sub-commands for more."""
    runs = subparsers.add_parser("runs", help="work with several run folders", description="Work with run folders.")
    commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    compare = commands.add_parser(
        "compare",
        help="compare runs side by side",
        description="Table of runs (model, data, epochs, accuracy, size, time) and their validation curves.",
    )
    compare.add_argument("runs", metavar="RUN", nargs="+", type=Path, help="run folders")
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("comparison"),
        metavar="DIR",
        help="folder for comparison.csv and comparison.png (default: ./comparison)",
    )
    add_format_argument(compare)
    compare.set_defaults(func=run_compare)
    listing = commands.add_parser(
        "list",
        help="list the run folders, and how to open their experiment tracker",
        description="One line per run folder in --runs-dir (oldest first), then the command that opens the MLflow "
        "UI on the runs trained with --tracking mlflow.",
    )
    listing.add_argument(
        "--runs-dir",
        type=Path,
        default=Path("runs"),
        metavar="DIR",
        help="the folder holding the run folders (default: ./runs)",
    )
    add_format_argument(listing)
    listing.set_defaults(func=run_list)
    return commands


LIST_COLUMNS = [
    ("run", "Run"),
    ("model", "Model"),
    ("data", "Data"),
    ("status", "Status"),
    ("epochs", "Epochs"),
    ("test_acc", "Test acc"),
    ("created", "Created"),
]


def _runs_table(title: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> Table:
    from cnnlab.evaluation.runs_summary import format_value

    return Table(
        title,
        [label for _, label in columns],
        [[format_value(key, row.get(key)) for key, _ in columns] for row in rows],
    )


def run_list(args: argparse.Namespace) -> int:
    """Prints the runs and the tracker command(s); returns the exit code."""
    from cnnlab.evaluation.runs_summary import list_runs

    rows, trackers = list_runs(args.runs_dir)
    if args.format != "table" or rows:
        table = _runs_table(f"{plural(len(rows), 'run')} in {args.runs_dir}", rows, LIST_COLUMNS)
        console = print_output(table, args.format, records=rows)
        if console is None:
            return 0
    else:
        console = stdout_console()
        console.print(f"No runs in {args.runs_dir} yet: cnnlab train DATA --runs-dir {args.runs_dir}")
    for command in trackers:
        console.print(f"Tracked in MLflow: [bold]{command}[/bold]", soft_wrap=True)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Prints the comparison table and where the files went; returns the exit code."""
    from cnnlab.evaluation.runs_summary import compare_runs

    rows, png = compare_runs(list(args.runs), args.out)
    console = print_output(_runs_table(plural(len(rows), "run"), rows, COLUMNS), args.format, records=rows)
    if console is None:
        return 0
    if png is not None:
        console.print(f"Curves: [bold]{png}[/bold]")
    console.print(f"Table:  [bold]{Path(args.out) / 'comparison.csv'}[/bold]")
    return 0
