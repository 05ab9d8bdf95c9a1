"""A results table as data: what a command prints, saves beside its artifacts, and the report shows.

Commands that compare things (before/after pruning, FP32 vs INT8, teacher vs student) return a
``Table``; it is written as ``<name>.json`` (for the report and scripts) and ``<name>.md`` (for
people), so the numbers are formatted once and read the same everywhere.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.io import atomic_write_json, atomic_write_text
from cnnlab.markup import escape, table


@dataclass
class Table:
    """A titled table of formatted cells, with notes (warnings, how it was measured) and raw numbers."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the unformatted figures, for scripts

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        """The title, the table (figures right-aligned) and the notes, escaped (the report's section)."""
        notes = "".join(f"<li>{escape(note)}</li>" for note in self.notes)
        return (
            f"<h3>{escape(self.title)}</h3>"
            + table(self.columns, self.rows, range(1, len(self.columns)))
            + (f"<ul>{notes}</ul>" if notes else "")
        )

    _repr_html_ = html  # shown as a table in Jupyter

    def csv(self) -> str:
        """The header and the rows as CSV (the cells as formatted; ``data`` has the raw figures)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buffer.getvalue()

    def save(self, folder: Path, name: str) -> Path:
        """Writes ``folder/name.json`` and ``folder/name.md``; returns the .md path."""
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / f"{name}.json", asdict(self))
        atomic_write_text(folder / f"{name}.md", self.markdown())
        return folder / f"{name}.md"

    @classmethod
    def load_all(cls, folder: Path) -> list[Table]:
        """Every table saved in ``folder`` (by name), skipping files that are not tables."""
        loaded = (cls.load(path) for path in sorted(Path(folder).glob("*.json")))
        return [table for table in loaded if table is not None]

    @classmethod
    def load(cls, path: Path) -> Table | None:
        """A saved table, or None when the file is missing or not a table."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls(
                str(raw["title"]),
                list(raw["columns"]),
                [list(r) for r in raw["rows"]],
                list(raw.get("notes") or []),
                dict(raw.get("data") or {}),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None


def csv_text(records: Sequence[Mapping[str, Any]], fields: Sequence[str] | None = None) -> str:
    """Records as CSV with a header: ``fields`` (default: the keys of the first record), "" where missing."""
    if fields is None:
        fields = list(records[0]) if records else []
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields), extrasaction="ignore")
    if fields:
        writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()
