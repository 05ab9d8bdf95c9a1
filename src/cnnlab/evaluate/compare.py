"""Reading run folders (history, summary row, redrawable figures) and putting runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from cnnlab.errors import CnnlabError
from cnnlab.evaluate import figures
from cnnlab.evaluate.figures import new_figure, save_figure
from cnnlab.evaluate.metrics import most_confused_pairs
from cnnlab.io import atomic_write_text

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "stage"]


def read_run_json(run_dir: Path) -> dict[str, Any]:
    """run.json of a run folder; a folder without one is not a run."""
    path = Path(run_dir) / "run.json"
    if not path.is_file():
        raise CnnlabError(f"{run_dir} is not a cnnlab run folder (no run.json in it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CnnlabError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CnnlabError(f"{path} should hold a JSON object")
    return data


def read_optional_json(path: Path) -> dict[str, Any]:
    """A JSON object file, or {} when it is missing or unreadable (an interrupted run)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _standardise(df: pd.DataFrame) -> pd.DataFrame:
    """Maps Lightning's column variants onto the standard names."""
    df = df.copy()
    for name in ("train_loss", "train_acc", "val_loss", "val_acc"):
        # With on_step and on_epoch both set, Lightning logs name_step and name_epoch, not name.
        if name not in df and f"{name}_epoch" in df:
            df[name] = df[f"{name}_epoch"]
    if "lr" not in df:
        # LearningRateMonitor names the column after the optimizer, e.g. "lr-AdamW".
        lr_cols = [c for c in df.columns if str(c).startswith("lr-") or str(c).startswith("lr_")]
        if lr_cols:
            df["lr"] = df[lr_cols[0]]
    return df


def _label_stages(df: pd.DataFrame, segments: int, stages: list[dict[str, Any]]) -> pd.DataFrame:
    """Fills a missing stage column from run.json: per restart of the epoch count, or by epoch counts."""
    names = [str(s.get("name", f"stage {i + 1}")) for i, s in enumerate(stages)]
    if "stage" in df or len(names) < 2:
        return df
    if segments == len(names):
        df["stage"] = [names[int(s)] for s in df["_segment"]]
    else:
        counts = [int(s.get("epochs") or 0) for s in stages]
        if sum(counts) == len(df):
            df["stage"] = [n for n, c in zip(names, counts) for _ in range(c)]
    return df


def load_history(run_dir: Path) -> pd.DataFrame:
    """One row per epoch from the run's Lightning ``metrics.csv`` (train and val rows merged).

    Looks for ``run_dir/metrics.csv``, else every ``metrics.csv`` below the run folder (one per
    logger version, in path order). When the epoch count restarts (a new stage or a new file),
    epochs are renumbered to run on. Returns the columns of :data:`HISTORY_COLUMNS` that exist;
    an empty frame when there is no history yet.
    """
    run_dir = Path(run_dir)
    top = run_dir / "metrics.csv"
    paths = [top] if top.is_file() else sorted(run_dir.rglob("metrics.csv"))
    frames = []
    for path in paths:
        try:
            frames.append(_standardise(pd.read_csv(path)))
        except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError):
            continue  # a file cut short by an interrupted run: use what the others have
    raw = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if raw.empty or "epoch" not in raw:
        return pd.DataFrame(columns=HISTORY_COLUMNS[:1])
    raw = raw[pd.to_numeric(raw["epoch"], errors="coerce").notna()].copy()
    raw["epoch"] = raw["epoch"].astype(float).astype(int)
    # A drop in the epoch number (file order) starts a new segment: stages that count from 0.
    raw["_segment"] = (raw["epoch"].diff() < 0).cumsum()
    keep = [c for c in HISTORY_COLUMNS if c in raw and c != "epoch"]
    # last() takes each column's last non-null value, merging train and val rows of one epoch.
    hist = raw.groupby(["_segment", "epoch"], sort=True)[keep].last().reset_index()
    segments = int(hist["_segment"].nunique())
    if segments > 1:
        span = hist.groupby("_segment")["epoch"].max() + 1
        offset = span.cumsum().shift(fill_value=0)
        hist["epoch"] = hist["epoch"] + hist["_segment"].map(offset)
    if "stage" in hist:
        hist["stage"] = hist.groupby("_segment")["stage"].ffill()
    stages = read_optional_json(run_dir / "run.json").get("stages") or []
    hist = _label_stages(hist, segments, stages if isinstance(stages, list) else [])
    return hist[[c for c in HISTORY_COLUMNS if c in hist]].reset_index(drop=True)


def final_test_accuracy(metrics: dict[str, Any], stages: list[dict[str, Any]]) -> float | None:
    """Test accuracy from metrics.json, else from the last stage that recorded one."""
    test = metrics.get("test")
    if isinstance(test, dict) and test.get("accuracy") is not None:
        return float(test["accuracy"])
    accs = [s.get("test_acc") for s in stages if s.get("test_acc") is not None]
    return float(accs[-1]) if accs else None


def summarise_run(run_dir: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """One comparison row for a run folder, and its history."""
    run = read_run_json(run_dir)
    metrics = read_optional_json(Path(run_dir) / "metrics.json")
    history = load_history(run_dir)
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    best_val = None
    if "val_acc" in history and history["val_acc"].notna().any():
        best_val = float(history["val_acc"].max())
    elif any(s.get("best_val_acc") is not None for s in stages):
        best_val = max(float(s["best_val_acc"]) for s in stages if s.get("best_val_acc") is not None)
    epochs = len(history) if len(history) else (sum(int(s.get("epochs") or 0) for s in stages) or None)
    row = {
        "run": str(run.get("name") or Path(run_dir).name),
        "model": (run.get("model") or {}).get("name"),
        "data": (run.get("data") or {}).get("source"),
        "epochs": epochs,
        "best_val_acc": best_val,
        "test_acc": final_test_accuracy(metrics, stages),
        "params": (run.get("model") or {}).get("params_total"),
        "train_seconds": (run.get("timing") or {}).get("train_seconds"),
        "status": run.get("status"),
        "path": str(run_dir),
    }
    return row, history


def redraw_missing_figures(run_dir: Path) -> list[str]:
    """Draws the figures that metrics.csv, metrics.json and run.json can rebuild, if they are missing.

    Covers history, class counts, both confusion matrices, most confused and per-class accuracy
    (image grids need the images, so they are not redrawn). Returns problems worth showing.
    """
    run_dir = Path(run_dir)
    run, metrics = read_run_json(run_dir), read_optional_json(run_dir / "metrics.json")
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    names = list(run.get("class_names") or (test.get("per_class") or {}).keys())
    splits = (run.get("data") or {}).get("splits") or {}
    counts = {s: v["per_class"] for s, v in splits.items() if isinstance(v, dict) and v.get("per_class")}
    jobs = {
        "history.png": lambda out: figures.plot_history(load_history(run_dir), out),
        "class_counts.png": lambda out: figures.plot_class_counts(counts, out) if counts else None,
    }
    if test.get("confusion_matrix") is not None and names:
        cm = np.asarray(test["confusion_matrix"])
        jobs["confusion_matrix.png"] = lambda out: figures.plot_confusion_matrix(cm, names, out)
        jobs["confusion_matrix_normalized.png"] = lambda out: figures.plot_confusion_matrix(cm, names, out, True)
        jobs["most_confused.png"] = lambda out: figures.plot_most_confused(most_confused_pairs(cm, names), out)
    if test.get("per_class"):
        recall = {k: v["recall"] for k, v in test["per_class"].items()}
        jobs["per_class_accuracy.png"] = lambda out: figures.plot_per_class_accuracy(recall, out)
    notes = []
    for name, job in jobs.items():
        if (run_dir / name).exists():
            continue
        try:
            job(run_dir / name)
        except CnnlabError:
            pass  # nothing to draw yet (e.g. no epoch finished): the report says "not available"
        except (ValueError, KeyError, TypeError, OSError) as exc:  # a damaged file must not stop the page
            notes.append(f"could not draw {name}: {exc}")
    return notes


def compare_runs(run_dirs: list[Path], out_dir: Path) -> tuple[list[dict[str, Any]], Path]:
    """Writes ``comparison.csv`` and ``comparison.png`` (validation curves overlaid) to ``out_dir``.

    Returns:
        The table rows (run, model, data, epochs, best_val_acc, test_acc, params,
        train_seconds, status, path) and the PNG's path.
    """
    if not run_dirs:
        raise CnnlabError("name at least one run folder to compare")
    rows, histories = [], []
    for run_dir in run_dirs:
        row, hist = summarise_run(Path(run_dir))
        rows.append(row)
        histories.append(hist)
    names = [r["run"] for r in rows]
    for i, row in enumerate(rows):
        if names.count(row["run"]) > 1:  # same name from different folders: say which is which
            row["run"] = f"{row['run']} ({run_dirs[i]})"
    out_dir = Path(out_dir)
    atomic_write_text(out_dir / "comparison.csv", pd.DataFrame(rows).to_csv(index=False))
    return rows, plot_comparison(rows, histories, out_dir / "comparison.png")


def plot_comparison(rows: list[dict[str, Any]], histories: list[pd.DataFrame], out: Path) -> Path:
    """Validation accuracy and loss per epoch, one line per run."""
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, col, title in zip(axes, ("val_acc", "val_loss"), ("Validation accuracy", "Validation loss")):
        drew = False
        for row, hist in zip(rows, histories):
            if col in hist and hist[col].notna().any():
                ok = hist[col].notna()
                ax.plot(hist["epoch"][ok], hist[col][ok], "-o", markersize=3, label=row["run"])
                drew = True
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drew:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no validation history recorded", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, out, f"Comparing {len(rows)} runs")


def format_value(key: str, value: Any) -> str:
    """Human-readable table cell: percentages, thousands separators, seconds as m:ss."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if key in ("best_val_acc", "test_acc"):
        return f"{100 * float(value):.2f}%"
    if key == "params":
        return f"{int(value):,}"
    if key == "train_seconds":
        minutes, seconds = divmod(int(round(float(value))), 60)
        return f"{minutes}:{seconds:02d}"
    return str(value)
