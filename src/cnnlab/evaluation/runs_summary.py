"""Runs side by side: one summary row per run folder, and their validation curves overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cnnlab.errors import CnnlabError
from cnnlab.figures import plot_curves
from cnnlab.io import atomic_write_text
from cnnlab.training.history import load_history
from cnnlab.training.record import StageRecord
from cnnlab.training.run_dir import open_run, read_optional_json, read_record
from cnnlab.training.tracking import DB_NAME, ui_command


def final_test_accuracy(metrics: dict[str, Any], stages: list[StageRecord]) -> float | None:
    """Test accuracy from metrics.json, else from the last stage that recorded one."""
    test = metrics.get("test")
    if isinstance(test, dict) and test.get("accuracy") is not None:
        return float(test["accuracy"])
    accs = [stage.test_acc for stage in stages if stage.test_acc is not None]
    return float(accs[-1]) if accs else None


def kept_val_accuracy(stage: StageRecord | None, history: pd.DataFrame) -> float | None:
    """The validation accuracy of the kept model (``stage``: ``RunRecord.kept_stage()``): its epoch's,
    not the best any epoch reached.

    Runs record it per stage (``val_at_best``); for older runs, the stage's epoch of lowest
    validation loss (what they selected by) in the history.
    """
    best = stage.val_at_best if stage is not None else None
    if best is not None and best.accuracy is not None:
        return float(best.accuracy)
    if "val_acc" not in history or "val_loss" not in history:
        return None
    rows = history[history["stage"] == stage.name] if stage and "stage" in history else history
    rows = rows[rows["val_loss"].notna() & rows["val_acc"].notna()].reset_index(drop=True)
    return float(rows["val_acc"].iloc[int(rows["val_loss"].to_numpy().argmin())]) if len(rows) else None


def summarise_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One comparison row for a run folder, and its history."""
    files = open_run(run_dir)
    run = read_record(files)
    history = load_history(files.metrics_csv)
    row = {
        "run": str(run.name or files.root.name),
        "model": run.model.name,
        "data": run.data.source,
        "epochs": len(history) or None,
        "kept_val_acc": kept_val_accuracy(run.kept_stage(), history),
        "test_acc": final_test_accuracy(read_optional_json(files.metrics_json), run.stages),
        "params": run.model.params_total,
        "train_seconds": run.timing.train_seconds,
        "status": run.status,
        "path": str(run_dir),
    }
    return row, history


def list_runs(runs_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The run folders in ``runs_dir`` (oldest first, one row each, as ``runs compare`` makes them) and
    how to open the MLflow stores their runs are tracked in (the SQLite store beside them counts too).

    Raises:
        CnnlabError: when ``runs_dir`` is not a folder.
    """
    runs_dir = Path(runs_dir).expanduser()
    if not runs_dir.is_dir():
        raise CnnlabError(f"no runs folder '{runs_dir}'; train first, or point --runs-dir at one")
    rows, stores = [], []
    for folder in sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file()):
        row, _ = summarise_run(folder)
        run = read_record(open_run(folder))
        tracking: dict[str, Any] = run.tracking if isinstance(run.tracking, dict) else {}
        row.update(created=run.created, tracking=tracking.get("uri"))
        rows.append(row)
        if tracking.get("uri") and tracking["uri"] not in stores:
            stores.append(tracking["uri"])
    rows.sort(key=lambda row: str(row.get("created") or ""))
    beside = "sqlite:///" + (runs_dir.resolve() / DB_NAME).as_posix()
    if (runs_dir / DB_NAME).is_file() and beside not in stores:
        stores.append(beside)
    return rows, [ui_command(uri) for uri in stores]


def compare_runs(run_dirs: list[Path], out_dir: Path) -> tuple[list[dict[str, Any]], Path | None]:
    """Writes ``comparison.csv`` and ``comparison.png`` (validation curves overlaid) to ``out_dir``.

    Returns:
        The table rows (run, model, data, epochs, kept_val_acc, test_acc, params,
        train_seconds, status, path) and the PNG's path (None when no run has a finished epoch).
    """
    if not run_dirs:
        raise CnnlabError("name at least one run folder to compare")
    rows, histories = [], []
    for run_dir in run_dirs:
        row, history = summarise_run(Path(run_dir))
        rows.append(row)
        histories.append(history)
    names = [r["run"] for r in rows]
    for i, row in enumerate(rows):
        if names.count(row["run"]) > 1:  # same name from different folders: say which is which
            row["run"] = f"{row['run']} ({run_dirs[i]})"
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "comparison.csv", pd.DataFrame(rows).to_csv(index=False))
    curves = {row["run"]: h for row, h in zip(rows, histories) if len(h)}
    if not curves:
        return rows, None
    return rows, plot_curves(
        curves, out_dir / "comparison.png", f"Comparing {len(rows)} runs (validation)", splits=("val",)
    )


def format_value(key: str, value: Any) -> str:
    """Human-readable table cell: percentages, thousands separators, seconds as m:ss."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if key in ("kept_val_acc", "test_acc"):
        return f"{100 * float(value):.2f}%"
    if key == "params":
        return f"{int(value):,}"
    if key == "train_seconds":
        minutes, seconds = divmod(int(round(float(value))), 60)
        return f"{minutes}:{seconds:02d}"
    return str(value)
