"""The comparison folder's files: ``comparison.csv``, ``comparison.md`` and ``comparison.png``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.comparison.charts import plot_comparison
from cnnlab.comparison.columns import CSV_FIELDS, cell, display_columns
from cnnlab.errors import plural
from cnnlab.figures import png_html
from cnnlab.io import atomic_write_text
from cnnlab.markup import escape, table
from cnnlab.tables import csv_text as records_csv

if TYPE_CHECKING:  # the dataclass only, for annotations: architectures imports this module
    from cnnlab.comparison.architectures import Comparison

FILES = {"csv": "comparison.csv", "md": "comparison.md", "png": "comparison.png"}


def csv_text(comparison: Comparison) -> str:
    """Every row with every field (:data:`CSV_FIELDS`), empty where not measured."""
    return records_csv(comparison.rows, CSV_FIELDS)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(comparison: Comparison) -> str:
    """The table with the command, the machine, how each figure was measured and the chart."""
    s = comparison.settings
    columns = display_columns(s.batch_size, comparison.trained)
    lines = [
        f"# Comparing {len(comparison.rows)} architectures",
        "",
        f"Command: `{comparison.command}`  ",
        f"Machine: {comparison.machine}  ",
        f"Input: {s.image_size}x{s.image_size} RGB; throughput and memory also at batch {s.batch_size}.",
        "",
        *(
            [f"**Measured on a busy machine: rerun when it is quiet.** {busy_text(comparison)}", ""]
            if comparison.busy
            else []
        ),
        "| " + " | ".join(label for _, label in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_md_cell(cell(row, key)) for key, _ in columns) + " |" for row in comparison.rows]
    lines += ["", "How each figure was measured:", ""]
    lines += [f"- **{what}**: {text}" for what, text in comparison.how.items()]
    if comparison.same_way:
        lines += [
            "",
            (
                f"Training: {comparison.same_way} Each model's run folder is in `runs/` here "
                "(`cnnlab evaluate`, `cnnlab explain` and `cnnlab runs compare` work on them)."
            ),
        ]
    if comparison.interrupted:
        lines += ["", f"Training was interrupted in `{comparison.interrupted}`; the models after it were not trained."]
    if "png" in comparison.files:
        lines += ["", f"![The comparison as charts]({FILES['png']})"]
    return "\n".join(lines) + "\n"


def busy_text(comparison: Comparison) -> str:
    """Why the times are not to be trusted, as a sentence (empty on a quiet machine)."""
    return f"Why: {comparison.busy}." if comparison.busy else ""


def write_outputs(comparison: Comparison) -> dict[str, Path]:
    """Writes the three files into ``comparison.folder``; their paths by kind (csv, md, png)."""
    folder = Path(comparison.folder)
    paths = {kind: folder / name for kind, name in FILES.items()}
    atomic_write_text(paths["csv"], csv_text(comparison))
    figure = plot_comparison(
        comparison.rows,
        paths["png"],
        comparison.settings.batch_size,
        f"{comparison.settings.image_size} px, {plural(comparison.threads, 'thread')}"
        + ("; MEASURED ON A BUSY MACHINE: times not comparable, rerun" if comparison.busy else ""),
    )
    written = {"csv": paths["csv"], "md": paths["md"], **({"png": figure} if figure else {})}
    comparison.files = written
    atomic_write_text(paths["md"], markdown(comparison))
    return written


def html_summary(comparison: Comparison) -> str:
    """The table and the charts for a notebook (``Comparison._repr_html_``)."""
    s = comparison.settings
    columns = display_columns(s.batch_size, comparison.trained, compact=True)
    rows = [[cell(row, key, compact=True) for key, _ in columns] for row in comparison.rows]
    title = (
        f"{len(comparison.rows)} architectures at {s.image_size} px, "
        f"{plural(comparison.threads, 'thread')}: {comparison.folder}"
        + (" (measured on a busy machine: rerun)" if comparison.busy else "")
    )
    chart = png_html([comparison.files["png"]]) if "png" in comparison.files else ""
    return (
        f"<div><b>{escape(title)}</b>"
        + table([label for _, label in columns], rows, range(1, len(columns)))
        + chart
        + "</div>"
    )
