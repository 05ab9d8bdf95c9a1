"""Lightning's CSVLogger, made safe for killed and resumed runs.

Lightning's writer deletes an existing ``metrics.csv`` when it starts and appends rows in place,
so a resumed run would lose its history and a kill mid-write could tear a line. This writer
keeps the rows (one per logged epoch: few) and rewrites the whole file atomically on each save.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cnnlab.io import atomic_write_text

LEADING = ("epoch", "step")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv (empty values dropped), or [] when there is none."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k and v not in ("", None)} for row in csv.DictReader(handle)]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Writes rows with the union of their columns (epoch and step first), atomically."""
    keys = set().union(*rows) if rows else set(LEADING)
    columns = [k for k in LEADING if k in keys] + sorted(keys - set(LEADING))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        self._rows = read_rows(Path(self.metrics_file_path))

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes an existing metrics.csv here; a resumed run must keep it."""

    def save(self) -> None:
        if not self.metrics:
            return
        self._rows.extend(self.metrics)
        self.metrics = []
        write_rows(Path(self.metrics_file_path), self._rows)


class HistoryCSVLogger(CSVLogger):
    """``metrics.csv`` in the run folder, one row per logged epoch, kept across resumes."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
