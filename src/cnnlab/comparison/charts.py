"""One PNG of the comparison: a bar chart per figure, and accuracy against latency.

The scatter is the chart for choosing a model under a latency budget: draw a vertical line at
the budget and take the highest point left of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from cnnlab.figures import new_figure, save_figure, short


def _label(value: float | None) -> str:
    """A bar's value: 'n/a', whole numbers from 100, else three significant digits (never 1.5e+03)."""
    if value is None:
        return "n/a"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _value(row: dict[str, Any], key: str, scale: float = 1.0) -> float | None:
    value = row.get(key)
    return None if value is None else float(value) * scale


def _bars(
    ax: Axes,
    rows: Sequence[dict[str, Any]],
    key: str,
    title: str,
    scale: float = 1.0,
    spread: tuple[str, str] | None = None,
) -> None:
    """One bar per model (colour = model, as in every panel), its value written on top."""
    names = [short(row["model"], 22) for row in rows]
    values = [_value(row, key, scale) for row in rows]
    heights = [v or 0.0 for v in values]
    ax.bar(range(len(rows)), heights, color=[f"C{i}" for i in range(len(rows))])
    tops = heights
    if spread is not None:  # interquartile range as an error bar, the value written above it
        low = [h - (_value(r, spread[0], scale) or h) for h, r in zip(heights, rows)]
        high = [(_value(r, spread[1], scale) or h) - h for h, r in zip(heights, rows)]
        ax.errorbar(range(len(rows)), heights, yerr=[low, high], fmt="none", ecolor="0.2", capsize=3, linewidth=1)
        tops = [h + up for h, up in zip(heights, high)]
    for x, (top, value) in enumerate(zip(tops, values)):
        ax.annotate(
            _label(value), (x, top), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=8
        )
    ax.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.margins(y=0.15)
    ax.grid(axis="y", alpha=0.3)


def _accuracy_bars(ax: Axes, rows: Sequence[dict[str, Any]]) -> None:
    """ImageNet top-1 (cited, hatched) beside test accuracy on the user's data (measured)."""
    trained = any(row.get("test_acc") is not None for row in rows)
    width = 0.4 if trained else 0.7
    series: list[tuple[str, float, str, str | None]] = [("imagenet_top1", 1.0, "ImageNet top-1 (cited)", "//")]
    if trained:
        series.append(("test_acc", 100.0, "test accuracy on the data", None))
    for position, (key, scale, label, hatch) in enumerate(series):
        offset = (position - (len(series) - 1) / 2) * width
        values = [_value(row, key, scale) for row in rows]
        bars = ax.bar(
            [i + offset for i in range(len(rows))],
            [v or 0.0 for v in values],
            width,
            color=[f"C{i}" for i in range(len(rows))],
            alpha=0.55 if hatch else 1.0,
            hatch=hatch,
            edgecolor="0.3",
            label=label,
        )
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.1f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)), [short(row["model"], 22) for row in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 110)
    ax.set_title("Accuracy (%)", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(axis="y", alpha=0.3)


def _scatter(ax: Axes, rows: Sequence[dict[str, Any]]) -> None:
    """Accuracy against batch-1 latency: hollow circles cited ImageNet, squares measured test accuracy."""
    drew = _scatter_points(ax, rows)
    _latency_axes(ax)
    if not drew:  # an empty chart says why, rather than showing bare axes
        ax.text(
            0.5,
            0.5,
            "no accuracy known: ImageNet top-1 is cited for pretrained weights,\n"
            "and --data measures test accuracy on your images",
            ha="center",
            va="center",
            transform=ax.transAxes,
            fontsize=9,
            color="0.3",
        )
        return
    ax.margins(x=0.25, y=0.2)
    _marker_legend(ax, measured=any(row.get("test_acc") is not None for row in rows))


def _scatter_points(ax: Axes, rows: Sequence[dict[str, Any]]) -> bool:
    """One labelled point per model and kind of accuracy known; whether any was drawn."""
    drew = False
    for i, row in enumerate(rows):
        latency = _value(row, "latency_ms")
        for key, scale, marker, filled in (("imagenet_top1", 1.0, "o", False), ("test_acc", 100.0, "s", True)):
            accuracy = _value(row, key, scale)
            if latency is None or accuracy is None:
                continue
            ax.scatter(
                [latency],
                [accuracy],
                s=90,
                marker=marker,
                linewidths=2,
                edgecolors=f"C{i}",
                facecolors=f"C{i}" if filled else "none",
                zorder=3,
            )
            ax.annotate(
                short(row["model"], 18),
                (latency, accuracy),
                xytext=(7, 5),
                textcoords="offset points",
                fontsize=8,
                color=f"C{i}",
            )
            drew = True
    return drew


def _latency_axes(ax: Axes) -> None:
    """Latency on a log scale labelled in plain ms, accuracy up, and how to read the chart."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100...: read as plain ms
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("latency at batch 1 (ms, log scale): left is faster")
    ax.set_ylabel("accuracy (%): up is better")
    ax.set_title("Accuracy vs latency: under a latency budget, take the highest point left of it", fontsize=10)
    ax.grid(alpha=0.3, which="both")


def _marker_legend(ax: Axes, measured: bool) -> None:
    """What the two markers mean (colours name the models beside each point, so they need no legend)."""
    handles = [
        Line2D(
            [],
            [],
            marker="o",
            linestyle="",
            markerfacecolor="none",
            markeredgecolor="0.3",
            markersize=9,
            label="ImageNet top-1 (cited)",
        )
    ]
    if measured:
        handles.append(
            Line2D([], [], marker="s", linestyle="", color="0.3", markersize=8, label="test accuracy on the data")
        )
    ax.legend(handles=handles, fontsize=8, loc="best")


def plot_comparison(rows: Sequence[dict[str, Any]], out: Path, batch_size: int, subtitle: str) -> Path | None:
    """Writes the comparison PNG for the measured rows; None when no model could be measured."""
    measured = [row for row in rows if row.get("status") == "ok"]
    if not measured:
        return None
    fig = new_figure(16, 8.5)
    grid = fig.add_gridspec(2, 4)
    _bars(fig.add_subplot(grid[0, 0]), measured, "params_total", "Parameters (millions)", 1e-6)
    _bars(fig.add_subplot(grid[0, 1]), measured, "macs", "Multiply-accumulates per image (G)", 1e-9)
    _bars(
        fig.add_subplot(grid[0, 2]),
        measured,
        "latency_ms",
        "Latency at batch 1 (ms, bar: IQR)",
        spread=("latency_p25_ms", "latency_p75_ms"),
    )
    _bars(
        fig.add_subplot(grid[0, 3]),
        measured,
        "throughput",
        f"Throughput at batch {batch_size} (images/s)",
        spread=("throughput_p25", "throughput_p75"),
    )
    _bars(fig.add_subplot(grid[1, 0]), measured, "memory_mb", "Forward-pass memory at batch 1 (MB)")
    _accuracy_bars(fig.add_subplot(grid[1, 1]), measured)
    _scatter(fig.add_subplot(grid[1, 2:]), measured)
    return save_figure(fig, out, f"Comparing {len(measured)} architectures ({subtitle})")
