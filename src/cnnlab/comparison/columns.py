"""The comparison's columns: which figures a row holds, and how each reads in a table.

The CSV holds every field of :data:`CSV_FIELDS` in plain units (counts, bytes as MB, ms, %);
``comparison.md`` and the terminal show :func:`display_columns`, formatted by :func:`cell`.
"""

from __future__ import annotations

import math
from typing import Any

CSV_FIELDS = [
    "model",
    "resolved",
    "status",
    "weights",
    "params_total",
    "params_trainable",
    "layers",
    "weight_layers",
    "macs",
    "size_mb",
    "latency_ms",
    "latency_p25_ms",
    "latency_p75_ms",
    "latency_min_ms",
    "latency_repeats",
    "throughput",
    "throughput_p25",
    "throughput_p75",
    "throughput_max",
    "throughput_repeats",
    "memory_mb",
    "memory_batch_mb",
    "imagenet_top1",
    "imagenet_weights",
    "imagenet_px",
    "trained_from",
    "test_acc",
    "train_seconds",
    "epochs",
    "epoch_seconds",
    "stages",
    "run",
    "note",
]

TRAINING_FIELDS = ("test_acc", "train_seconds", "epochs", "epoch_seconds")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _count(value: float) -> str:
    """138357544 -> '138.36 M', 353320 -> '353.3 k'."""
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f}"


def _spread(median: float, low: Any, high: Any, digits: int, best: Any = None) -> str:
    """'12.3 (11.0-14.2) 10.9': the median, its interquartile range, and the best single pass."""
    text = f"{median:.{digits}f}"
    if not (_missing(low) or _missing(high)):
        text += f" ({low:.{digits}f}-{high:.{digits}f})"
    return text if _missing(best) else f"{text} {best:.{digits}f}"


def _digits(value: float) -> int:
    """Decimals that keep three significant digits (two above 100)."""
    return 0 if value >= 100 else 1 if value >= 10 else 2 if value >= 1 else 3


def cell(row: dict[str, Any], key: str, compact: bool = False) -> str:
    """The text of column ``key`` for ``row``: '-' when not measured, 'n/a' when not known.

    ``compact`` (the terminal) leaves out what :func:`footnotes` says below the table.
    """
    value: Any = row.get(key)  # a measured number, None or NaN
    if key == "imagenet_top1":
        if _missing(value):
            return "n/a"
        if compact:
            return f"{value:.2f}%"
        return f"{value:.2f}% ({row.get('imagenet_weights')}, {row.get('imagenet_px')} px)"
    if _missing(value):
        return "-"
    if key in ("params_total", "macs"):
        return _count(value)
    if key == "layers":
        return f"{value} ({row.get('weight_layers', '-')})"
    if key == "latency_ms":
        return _spread(
            value, row.get("latency_p25_ms"), row.get("latency_p75_ms"), _digits(value), row.get("latency_min_ms")
        )
    if key == "throughput":
        return _spread(
            value, row.get("throughput_p25"), row.get("throughput_p75"), _digits(value), row.get("throughput_max")
        )
    if key == "memory_mb":
        batch = row.get("memory_batch_mb")
        return f"{value:.0f} / {batch:.0f}" if not _missing(batch) else f"{value:.0f}"
    if key == "size_mb":
        return f"{value:.1f}"
    if key == "test_acc":
        return f"{100 * value:.2f}%"
    if key == "train_seconds":
        minutes, seconds = divmod(int(round(value)), 60)
        return f"{minutes}:{seconds:02d}"
    if key == "epoch_seconds":
        return f"{value:.2f}"
    return str(value)


def footnotes(rows: list[dict[str, Any]]) -> list[str]:
    """Per model, what the compact table leaves out: which weights its ImageNet figure is for, and its note."""
    lines = []
    for row in rows:
        said = []
        if not _missing(row.get("imagenet_top1")):
            said.append(f"ImageNet top-1 of {row['imagenet_weights']} at {row['imagenet_px']} px")
        if row.get("note"):
            said.append(str(row["note"]))
        if said:
            lines.append(f"{row['model']}: {'; '.join(said)}")
    return lines


def display_columns(batch_size: int, trained: bool, compact: bool = False) -> list[tuple[str, str]]:
    """(key, heading) of the columns people read, training's only when models were trained;
    ``compact`` (the terminal) leaves the notes to :func:`footnotes`."""
    columns = [
        ("model", "model"),
        ("weights", "weights"),
        ("params_total", "params"),
        ("layers", "layers (conv+linear)"),
        ("macs", "MACs"),
        ("size_mb", "FP32 MB"),
        ("latency_ms", "latency ms batch 1 (IQR) fastest"),
        ("throughput", f"images/s batch {batch_size} (IQR) best"),
        ("memory_mb", f"forward MB batch 1 / {batch_size}"),
        ("imagenet_top1", "ImageNet top-1"),
    ]
    if trained:
        columns += [
            ("trained_from", "trained from"),
            ("test_acc", "test acc"),
            ("train_seconds", "train time"),
            ("epochs", "epochs"),
            ("epoch_seconds", "s/epoch (last stage)"),
        ]
    return columns if compact else [*columns, ("note", "note")]
