"""A run's training history, ``metrics.csv``: written once per logged epoch, kept across resumes.

Each row carries the stage it belongs to (``frozen``, ``finetune`` or ``train``) and the stage's
own epoch number (Lightning counts from 0 in each ``fit``). So trimming after a kill removes
only what the resumed run redoes, and reading puts the stages one after another.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts and appends rows in
place, so a resumed run would lose its history and a kill mid-write could tear a line. This
writer keeps the rows (one per logged epoch: few) and rewrites the whole file atomically on each save.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, cast

import pandas as pd
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from cnnlab.io import atomic_write_text

LEADING = ("stage", "epoch", "step")
METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
HISTORY_COLUMNS = ["epoch", "stage", "stage_epoch", *METRICS]


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a metrics.csv (empty values dropped), or [] when there is none."""
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{k: v for k, v in row.items() if k and v not in ("", None)} for row in csv.DictReader(handle)]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Writes rows with the union of their columns (stage, epoch and step first), atomically."""
    keys = set().union(*rows) if rows else set(LEADING)
    columns = [k for k in LEADING if k in keys] + sorted(keys - set(LEADING))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def trim_history(path: Path, finished: list[str], stage: str | None, last_epoch: int | None) -> None:
    """Keeps the rows a resumed run does not redo: those of finished stages, and those of ``stage``
    up to its checkpoint's epoch ``last_epoch`` (None: the stage restarts, none of its rows kept)."""
    rows = read_rows(path)

    def kept(row: dict[str, Any]) -> bool:
        if row.get("stage") in finished:
            return True
        return row.get("stage") == stage and last_epoch is not None and float(row.get("epoch", 0)) <= last_epoch

    remaining = [row for row in rows if kept(row)]
    if len(remaining) != len(rows):
        write_rows(path, remaining)


class _KeepingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, stage: str) -> None:
        super().__init__(log_dir)
        self.stage = stage
        self._rows = read_rows(Path(self.metrics_file_path))

    def _check_log_dir_exists(self) -> None:
        """Lightning deletes an existing metrics.csv here; a resumed run must keep it."""

    def save(self) -> None:
        if not self.metrics:
            return
        self._rows.extend({"stage": self.stage, **row} for row in self.metrics)
        self.metrics = []
        write_rows(Path(self.metrics_file_path), self._rows)


class HistoryCSVLogger(CSVLogger):
    """``metrics.csv`` in the run folder, one row per logged epoch of ``stage``, kept across resumes."""

    def __init__(self, save_dir: Path, stage: str) -> None:
        # Flushed at every (epoch-level) log call: a killed run keeps its history.
        super().__init__(save_dir=save_dir, name="", version="", flush_logs_every_n_steps=1)
        self.stage = stage

    @property
    @rank_zero_experiment  # other ranks get a stand-in: only rank 0 reads or writes the file
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir, stage=self.stage)
        return cast(ExperimentWriter, self._experiment)  # declared as the base class's writer


def load_history(path: Path) -> pd.DataFrame:
    """One row per epoch of a metrics.csv (train and val rows merged), stages one after another.

    Columns (those that exist): ``epoch`` counted through all stages from 1, ``stage``,
    ``stage_epoch`` (the stage's own count, from 1), and the metrics: epochs are numbered as the
    console and the report number them (the file keeps Lightning's count from 0, so every run
    folder, old or new, reads the same). Empty when there is no history yet.
    """
    try:
        raw = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
        raw = pd.DataFrame()  # none yet, or cut short by an interrupted run
    if raw.empty or "epoch" not in raw:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    raw = raw[pd.to_numeric(raw["epoch"], errors="coerce").notna()].copy()
    raw["stage_epoch"] = raw["epoch"].astype(float).astype(int) + 1
    if "stage" not in raw:
        raw["stage"] = "train"
    raw["stage"] = raw["stage"].astype(str)
    order = {name: i for i, name in enumerate(dict.fromkeys(raw["stage"]))}
    raw["_order"] = raw["stage"].map(order)
    metrics = [c for c in METRICS if c in raw]
    # last() takes each column's last non-null value, merging train and val rows of one epoch.
    hist = raw.groupby(["_order", "stage", "stage_epoch"], sort=True)[metrics].last().reset_index()
    hist["epoch"] = range(1, len(hist) + 1)
    return hist[[c for c in HISTORY_COLUMNS if c in hist]].reset_index(drop=True)
