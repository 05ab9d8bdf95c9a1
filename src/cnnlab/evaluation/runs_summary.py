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
from cnnlab.training.run_dir import open_run, read_meta, read_optional_json
from cnnlab.training.tracking import DB_NAME, META_KEY, ui_command


def final_test_accuracy(metrics: dict[str, Any], stages: list[dict[str, Any]]) -> float | None:
    """Test accuracy from metrics.json, else from the last stage that recorded one."""
    test = metrics.get("test")
    if isinstance(test, dict) and test.get("accuracy") is not None:
        return float(test["accuracy"])
    accs = [s["test_acc"] for s in stages if s.get("test_acc") is not None]
    return float(accs[-1]) if accs else None


def kept_stage(run: dict[str, Any]) -> dict[str, Any] | None:
    """The record of the stage whose weights the run ended with (best.ckpt), or None before any stage.

    run.json names it under ``kept`` when there were several stages; else a later stage holds the
    weights when it replaced the earlier one's (``replaced_best``, missing in old runs: it did).
    """
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    named = (run.get("kept") or {}).get("stage") if isinstance(run.get("kept"), dict) else None
    for stage in stages:
        if named is not None and stage.get("name") == named:
            return stage
    replaced = [s for s in stages if s.get("replaced_best", True)]
    candidates = replaced or stages
    return candidates[-1] if candidates else None


def kept_val_accuracy(run: dict[str, Any], history: pd.DataFrame) -> float | None:
    """The validation accuracy of the kept model: its epoch's, not the best any epoch reached.

    Runs record it per stage (``val_at_best``); for older runs, the kept stage's epoch of lowest
    validation loss (what they selected by) in the history.
    """
    stage = kept_stage(run)
    best = (stage or {}).get("val_at_best")
    if isinstance(best, dict) and best.get("accuracy") is not None:
        return float(best["accuracy"])
    if "val_acc" not in history or "val_loss" not in history:
        return None
    rows = history[history["stage"] == stage["name"]] if stage and "stage" in history else history
    rows = rows[rows["val_loss"].notna() & rows["val_acc"].notna()].reset_index(drop=True)
    return float(rows["val_acc"].iloc[int(rows["val_loss"].to_numpy().argmin())]) if len(rows) else None


def summarise_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One comparison row for a run folder, and its history."""
    files = open_run(run_dir)
    run = read_meta(files)
    history = load_history(files.metrics_csv)
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    row = {
        "run": str(run.get("name") or files.root.name),
        "model": (run.get("model") or {}).get("name"),
        "data": (run.get("data") or {}).get("source"),
        "epochs": len(history) or None,
        "kept_val_acc": kept_val_accuracy(run, history),
        "test_acc": final_test_accuracy(read_optional_json(files.metrics_json), stages),
        "params": (run.get("model") or {}).get("params_total"),
        "train_seconds": (run.get("timing") or {}).get("train_seconds"),
        "status": run.get("status"),
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
        meta = read_meta(open_run(folder))
        raw = meta.get(META_KEY)
        tracking: dict[str, Any] = raw if isinstance(raw, dict) else {}
        row.update(created=meta.get("created"), tracking=tracking.get("uri"))
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
