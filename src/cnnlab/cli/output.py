"""What a command prints on stdout: a table for people, or the same facts as JSON or CSV for scripts.

Every command with ``--format`` declares it with :func:`add_format_argument` and prints with
:func:`print_output`; commands without it print their tables on :func:`stdout_console`. One policy
for the width: a terminal gets tables sized to it (a long value folds onto more lines, never cut
to "…", and a hint names ``--format csv`` / ``json`` when the table is wider than the terminal);
a pipe or a file gets every table at its full width, each value whole on one line, because grep,
logs and ``| less -S`` read lines, not an 80-column picture.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cnnlab.tables import Table, csv_text

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table as RichTable

FORMATS = ("table", "json", "csv")
FORMAT_HELP = "table for people; json or csv for scripts (default: table)"
# Wide enough for any table a command prints: a pipe gets the table at its natural width.
PIPE_WIDTH = 100_000
# A cell that reads as a figure ("96.72%", "3x3", "-0.5", "12.3 MB", "<0.01"): its column is right-aligned.
_FIGURE = re.compile(r"^[-+~<>≈]?\s?\d")
_PLACEHOLDERS = {"", "-", "—", "?", "n/a"}


def add_format_argument(
    parser: argparse.ArgumentParser | Any, formats: Sequence[str] = FORMATS, description: str = FORMAT_HELP
) -> None:
    """``--format`` (default ``table``) on ``parser`` or an argument group, with ``description`` as its help."""
    parser.add_argument("--format", choices=tuple(formats), default="table", help=description)


@contextlib.contextmanager
def progress_to_stderr(fmt: str) -> Iterator[None]:
    """While a command works: its progress lines go to stderr when stdout carries JSON or CSV."""
    with contextlib.nullcontext() if fmt == "table" else contextlib.redirect_stdout(sys.stderr):
        yield


def stdout_console() -> Console:
    """The console of stdout: the terminal's width there, unlimited in a pipe or a file."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=PIPE_WIDTH)


def print_output(
    table: Table,
    fmt: str,
    records: Sequence[Mapping[str, Any]] | None = None,
    fields: Sequence[str] | None = None,
    json_data: Any = None,
) -> Console | None:
    """``table`` for people, or the facts for scripts as JSON or CSV on stdout.

    Args:
        table: what people see (its notes printed under it).
        fmt: one of :data:`FORMATS`.
        records: the rows for scripts, unformatted (JSON: the list; CSV: one line each); default:
            the table itself (JSON: title, columns, rows, notes and data; CSV: columns and rows).
        fields: the CSV columns of ``records`` (default: the first record's keys).
        json_data: the JSON instead of ``records`` (when scripts get more than the rows).

    Returns:
        The console the table went to (for lines printed under it), None for JSON and CSV.
    """
    if fmt == "json":
        chosen = json_data if json_data is not None else records
        print_json(chosen if chosen is not None else dataclasses.asdict(table))
    elif fmt == "csv":
        print(table.csv() if records is None else csv_text(records, fields), end="")
    else:
        return print_table(table, hint=True)
    return None


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (paths and other objects as text, non-ASCII kept)."""
    json.dump(value, sys.stdout, indent=2, default=str, ensure_ascii=False)
    print()


def print_table(table: Table, hint: bool = False, console: Console | None = None) -> Console:
    """``table`` and its notes on ``console`` (default: stdout's); ``hint``: name --format csv/json when
    the table is wider than the terminal."""
    from rich.text import Text

    console = console or stdout_console()
    print_wide(console, rich_table(table), hint)
    for note in table.notes:
        console.print(Text(f"- {note}"), soft_wrap=not console.is_terminal)
    return console


def rich_table(table: Table) -> RichTable:
    """``table`` as a Rich table: cells as plain text (a path with [brackets] stays as it is), the
    columns of figures right-aligned."""
    from rich.table import Table as RichTable
    from rich.text import Text

    shown = RichTable(title=Text(table.title) if table.title else None)
    for index, label in enumerate(table.columns):
        cells = [str(row[index]) for row in table.rows if index < len(row)]
        figures = [c for c in cells if c.strip() not in _PLACEHOLDERS]
        numeric = bool(figures) and all(_FIGURE.match(c) for c in figures)
        shown.add_column(Text(label), justify="right" if numeric else "left", overflow="fold")
    for row in table.rows:
        shown.add_row(*(Text(str(cell)) for cell in row))
    return shown


def print_wide(console: Console, renderable: RenderableType, hint: bool = False) -> None:
    """Prints a table; on a terminal narrower than it, says so and (``hint``) how to get whole values."""
    console.print(renderable)
    if not console.is_terminal:
        return
    natural = console.measure(renderable, options=console.options.update_width(PIPE_WIDTH)).maximum
    if natural > console.width:
        how = "; --format csv or --format json gives every value whole" if hint else ""
        console.print(
            f"(the table is {natural} columns wide, the terminal {console.width}: long values are folded{how})",
            style="dim",
            highlight=False,
        )
