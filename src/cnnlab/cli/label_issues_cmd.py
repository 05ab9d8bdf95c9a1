"""``cnnlab data label-issues DATA``: images whose label is probably wrong, and copies under two labels."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.parser import positive_int
from cnnlab.cli.train_cmd import add_run_arguments, config_from_args

SHOWN = 15  # suspects printed; the CSV and the page have them all


def add_label_issues_parser(sub: Any) -> argparse.ArgumentParser:
    """Registers ``cnnlab data label-issues`` under ``cnnlab data``."""
    p = sub.add_parser(
        "label-issues",
        help="find images whose label is probably wrong (confident learning, cleanlab)",
        description="Scores every image with a model that never saw it (k-fold cross-validation: with --pretrained "
        "a logistic regression on the backbone's cached features, seconds; else the CNN trained once "
        "per fold), ranks the images by confident learning (cleanlab.filter.find_label_issues), and "
        "adds copies of one picture under different labels. Writes label_issues.csv (path, given and "
        "suggested label, confidence), label_issues.png (a gallery of the top suspects) and "
        "label_issues.html. Nothing is moved or deleted.",
    )
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds (default: 5)")
    p.add_argument("--gallery", type=positive_int, default=24, metavar="N", help="suspects drawn (default: 24)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the files go (default: label-issues/<model>-<data>)")
    p.add_argument(
        "--copy-to",
        type=Path,
        metavar="DIR",
        help="also copy the suspect files into DIR/<given>__looks_like__<suggested>/ for review",
    )
    add_run_arguments(p, data_nargs=None)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from cnnlab.api import label_issues
    from cnnlab.cli.output import print_wide, stdout_console

    result = label_issues(
        settings=config_from_args(args), folds=args.folds, gallery=args.gallery, out=args.out, copy_to=args.copy_to
    )
    info = result.summary()
    console = stdout_console()
    table = Table(
        "#",
        "path",
        "given",
        "suggested",
        "confidence",
        "why",
        title=f"{info['label_issues']} probable label errors, {info['copies_under_other_labels']} "
        f"copies under another label, of {result.images} images",
    )
    for row in result.rows[:SHOWN]:
        reasons = (("label", "label:"), ("copy under another label", "copy under"))
        why = ", ".join(w for w, key in reasons if key in row["issue"])
        table.add_row(
            str(row["rank"]),
            escape(row["path"]),
            escape(row["given_label"]),
            escape(row["suggested_label"]),
            f"{row['confidence']:.0%}",
            why,
        )
    print_wide(console, table)
    if len(result.rows) > SHOWN:
        print(f"... and {len(result.rows) - SHOWN} more in {result.files.csv}")
    print(f"method: {result.method} ({result.seconds:.0f} s)")
    for note in result.notes:
        print(note)
    print(f"table:   {result.files.csv}\ngallery: {result.files.gallery}\npage:    {result.files.page}")
    return 0
