"""Evaluation figures as PNG files, one function per picture, all in one style.

Figures are built on ``matplotlib.figure.Figure`` directly: no pyplot state and no GUI backend,
so plotting is safe from worker threads and on machines without a display. Sizes are fixed
(or bounded) in inches at :data:`DPI`, so a figure's pixel size is predictable.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnlab.errors import CnnlabError
from cnnlab.evaluate.metrics import calibration_bins
from cnnlab.io import atomic_write_bytes

DPI = 110
MAX_CM_CLASSES = 30  # above this, the confusion matrix shows the most-confused classes only
MAX_SAMPLE_ROWS = 20


def new_figure(width: float, height: float) -> Figure:
    """A figure of the given size in inches with constrained (tight) layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, out: Path, title: str | None = None) -> Path:
    """Adds the title and writes the PNG atomically, so a report never embeds half a file."""
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # no bbox_inches="tight": pixel size stays fixed
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)


def _short(name: str, n: int = 18) -> str:
    """Truncates long class names so axis labels stay legible."""
    return name if len(name) <= n else name[: n - 1] + "…"


def _hwc(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """(C, H, W) uint8 to what imshow wants, and the colour map for grayscale."""
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise CnnlabError(f"images must be (N, C, H, W) with C = 1 or 3, got an image of shape {image.shape}")
    return (image[0], "gray") if image.shape[0] == 1 else (np.transpose(image, (1, 2, 0)), None)


def plot_history(history: pd.DataFrame, out: Path) -> Path:
    """Accuracy and loss curves, train vs val, with stage boundaries and lr changes marked."""
    if history is None or len(history) == 0:
        raise CnnlabError("the training history is empty: nothing to plot")
    h = history.reset_index(drop=True)
    x = pd.to_numeric(h["epoch"], errors="coerce") if "epoch" in h else pd.Series(range(len(h)), dtype=float)
    if x.isna().any() or not x.is_monotonic_increasing or x.duplicated().any():
        x = pd.Series(range(len(h)), dtype=float)  # epochs restart per stage: count them through
    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    for ax, metric in zip(axes, ("acc", "loss")):
        drew = False
        for split, style in (("train", "-o"), ("val", "-s")):
            col = f"{split}_{metric}"
            if col in h and h[col].notna().any():
                ok = h[col].notna()
                ax.plot(x[ok], h[col][ok], style, markersize=3, label=split)
                drew = True
        ax.set_title("Accuracy" if metric == "acc" else "Loss")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if drew:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)
        _mark_stages(ax, h, x)
        _mark_lr(ax, h, x)
    return save_figure(fig, out, "Training history")


def _mark_stages(ax, h: pd.DataFrame, x: pd.Series) -> None:
    """Names each stage at its start, with a dashed line where one stage hands over to the next."""
    stage = h["stage"].ffill() if "stage" in h else pd.Series(dtype=object)
    if stage.nunique() < 2:
        return  # a single stage ("train") needs no marking
    for i in range(len(h)):
        if pd.notna(stage[i]) and (i == 0 or stage[i] != stage[i - 1]):
            xb = x[0] if i == 0 else (x[i - 1] + x[i]) / 2
            if i:
                ax.axvline(xb, color="0.4", linestyle="--", linewidth=1)
            ax.text(xb, 0.98, f" {stage[i]}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")


def _mark_lr(ax, h: pd.DataFrame, x: pd.Series) -> None:
    """Small triangles on the x axis where lr changed; text only when changes are few (steps, not a schedule)."""
    if "lr" not in h:
        return
    lr = pd.to_numeric(h["lr"], errors="coerce")
    prev, changes = None, []
    for i, v in enumerate(lr):
        if pd.isna(v):
            continue
        if prev is not None and not math.isclose(v, prev, rel_tol=1e-9):
            changes.append((x[i], v))
        prev = v
    trans = ax.get_xaxis_transform()
    for xi, v in changes:
        ax.plot([xi], [0.0], marker="^", color="tab:purple", markersize=6, transform=trans, clip_on=False)
        if len(changes) <= 6:  # aligned away from the nearer edge so the label is not cut off
            ha = "right" if xi > (x.min() + x.max()) / 2 else "left"
            ax.text(xi, 0.04, f" lr {v:.0e} ", transform=trans, fontsize=7, color="tab:purple", ha=ha)


def _confused_subset(cm: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k classes with the most errors (as true or as predicted), in label order."""
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=0) + off.sum(axis=1)
    return np.sort(np.argsort(-errors, kind="stable")[:k])


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], out: Path, normalize: bool = False) -> Path:
    """Heatmap of counts, or of row fractions (recall per true class), with values in each cell.

    Above :data:`MAX_CM_CLASSES` classes only the most-confused classes are drawn (the title says
    so): 100 unreadable rows help nobody, while the confused ones are what the reader looks for.
    Rows are normalised over *all* classes first, so the fractions shown stay true recalls.
    """
    m = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if m.shape != (k, k):
        raise CnnlabError(f"confusion matrix of shape {m.shape} does not match {k} class names")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    idx = np.arange(k) if k <= MAX_CM_CLASSES else _confused_subset(np.asarray(cm), MAX_CM_CLASSES)
    m, names = m[np.ix_(idx, idx)], [_short(class_names[i]) for i in idx]
    n = len(idx)
    side = min(max(4.5, 0.38 * n + 2.5), 14.0)
    fig = new_figure(side + 1.0, side)
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(m.max(), 1))
    fig.colorbar(im, ax=ax, shrink=0.8)
    font = 10 if n <= 10 else 8 if n <= 20 else 7
    ax.set_xticks(range(n), names, rotation=90 if n * max(map(len, names)) > 30 else 0, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = (1 if normalize else max(m.max(), 1)) / 2
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            if v == 0 and n > 12:
                continue  # blank zeros let the off-diagonal mistakes stand out in big matrices
            text = (f"{v:.2f}" if v else "0") if normalize else f"{int(v)}"
            ax.text(j, i, text, ha="center", va="center", fontsize=font - 1, color="white" if v > thresh else "black")
    title = "Confusion matrix" + (" (row-normalised)" if normalize else " (counts)")
    if k > MAX_CM_CLASSES:
        title += f"\n{n} most-confused of {k} classes"
    return save_figure(fig, out, title)


def plot_most_confused(pairs: Sequence[tuple[str, str, int]], out: Path) -> Path:
    """Horizontal bars of the most frequent (true -> predicted) mistakes, largest on top."""
    fig = new_figure(7, min(max(2.5, 0.35 * len(pairs) + 1.2), 12))
    ax = fig.add_subplot()
    if pairs:
        labels = [f"{_short(t)} → {_short(p)}" for t, p, _ in pairs][::-1]
        counts = [c for _, _, c in pairs][::-1]
        ax.barh(range(len(pairs)), counts, color="tab:red", alpha=0.8)
        ax.set_yticks(range(len(pairs)), labels, fontsize=8)
        ax.set_xlabel("test images")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.bar_label(ax.containers[0], fontsize=7, padding=2)
    else:
        ax.text(0.5, 0.5, "no mistakes on the test set", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    return save_figure(fig, out, "Most confused (true → predicted)")


def plot_misclassified(
    images: np.ndarray, y_true: Sequence[int], y_pred: Sequence[int], confidence: Sequence[float],
    class_names: Sequence[str], out: Path, max_images: int = 25,
) -> Path:
    """Grid of wrongly classified images titled "true: X / pred: Y (87%)"."""
    n = min(len(images), max_images)
    cols = max(1, min(5, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig = new_figure(2.2 * cols + 0.4, 2.4 * rows + 0.5)
    if n == 0:
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
        ax.set_axis_off()
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        img, cmap = _hwc(np.asarray(images[i]))
        ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
        ax.set_title(
            f"true: {_short(class_names[int(y_true[i])], 14)}\npred: {_short(class_names[int(y_pred[i])], 14)}"
            f" ({float(confidence[i]):.0%})", fontsize=8, color="firebrick",
        )
        ax.set_axis_off()
    return save_figure(fig, out, f"Misclassified test images ({n} shown)")


def plot_samples_per_class(
    images: np.ndarray, labels: Sequence[int], class_names: Sequence[str], out: Path, per_class: int = 8
) -> Path:
    """The lesson's sample grid: one row per class (first 20 classes), ``per_class`` images each."""
    labels = np.asarray(labels)
    shown = list(range(min(len(class_names), MAX_SAMPLE_ROWS)))
    fig = new_figure(1.1 * per_class + 1.4, 1.1 * len(shown) + 0.6)
    axes = np.asarray(fig.subplots(len(shown), per_class, squeeze=False))
    for r, c in enumerate(shown):
        picks = np.flatnonzero(labels == c)[:per_class]
        for j in range(per_class):
            ax = axes[r, j]
            ax.set(xticks=[], yticks=[])  # not set_axis_off(): the row's class name is the y label
            ax.spines[:].set_visible(False)
            if j < len(picks):
                img, cmap = _hwc(np.asarray(images[picks[j]]))
                ax.imshow(img, cmap=cmap, vmin=0, vmax=255)
        axes[r, 0].set_ylabel(_short(class_names[c], 14), rotation=0, ha="right", va="center", fontsize=9)
    title = "Samples per class"
    if len(class_names) > MAX_SAMPLE_ROWS:
        title += f" (first {MAX_SAMPLE_ROWS} of {len(class_names)} classes)"
    return save_figure(fig, out, title)


def plot_per_class_accuracy(per_class_recall: Mapping[str, float], out: Path) -> Path:
    """Horizontal bars of recall per class, worst at the top, with the mean as a dashed line."""
    items = sorted(per_class_recall.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    n = max(len(items), 1)
    fig = new_figure(7, min(max(2.5, 0.22 * n + 1.2), 20))
    ax = fig.add_subplot()
    values = [float(v) for _, v in items]
    ax.barh(range(len(items)), values, color=["tab:red" if v < 0.5 else "tab:blue" for v in values])
    ax.set_yticks(range(len(items)), [_short(k) for k, _ in items], fontsize=8 if n <= 40 else 5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (fraction of the class's test images classified correctly)")
    if values:
        ax.axvline(float(np.mean(values)), color="0.3", linestyle="--", linewidth=1, label="mean")
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, out, "Per-class accuracy")


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, out: Path, bins: int = 10) -> Path:
    """Calibration diagram of top-1 confidence vs accuracy, with ECE in the title.

    Uses :func:`calibration_bins` rather than ``sklearn.calibration.calibration_curve``: ECE needs
    each bin's sample count, which calibration_curve does not return, and the bottom panel shows it.
    """
    c = calibration_bins(y_true, probs, bins)
    centers, width = (c["edges"][:-1] + c["edges"][1:]) / 2, 1.0 / bins
    fig = new_figure(6, 6)
    top, bottom = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    acc = np.nan_to_num(c["accuracy"])
    top.bar(centers, acc, width=width, edgecolor="black", color="tab:blue", alpha=0.8, label="accuracy")
    # Mean confidence as points (not stacked "gap" bars): under-confident bins would draw a
    # negative gap inside the accuracy bar and hide its top.
    full = c["count"] > 0
    top.plot(centers[full], c["confidence"][full], "o-", color="tab:red", markersize=4, label="mean confidence")
    top.plot([0, 1], [0, 1], "--", color="0.3", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(centers, c["count"], width=width, color="0.5", edgecolor="black")
    bottom.set_xlabel("confidence (max probability)")
    bottom.set_ylabel("images")
    bottom.set_xlim(0, 1)
    return save_figure(fig, out, f"Reliability (ECE = {c['ece']:.3f})")


def plot_class_counts(counts: Mapping[str, Mapping[str, int]], out: Path) -> Path:
    """Grouped bars: images per class, one bar per split (train/val/test)."""
    splits = list(counts)
    classes = list(dict.fromkeys(c for s in splits for c in counts[s]))
    n = max(len(classes), 1)
    fig = new_figure(min(max(6.0, 0.15 * n * max(len(splits), 1) + 2), 18.0), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(len(splits), 1)
    for i, split in enumerate(splits):
        xs = np.arange(len(classes)) + (i - (len(splits) - 1) / 2) * width
        ax.bar(xs, [counts[split].get(c, 0) for c in classes], width=width, label=split)
    font = 9 if n <= 20 else 6 if n <= 60 else 4
    names = [_short(c) for c in classes]
    rotate = n * max(map(len, names), default=0) > 50  # upright labels only while they fit side by side
    ax.set_xticks(range(len(classes)), names, rotation=90 if rotate else 0, fontsize=font)
    ax.set_ylabel("images")
    if splits:
        ax.legend(fontsize=8)
    return save_figure(fig, out, "Images per class and split")

