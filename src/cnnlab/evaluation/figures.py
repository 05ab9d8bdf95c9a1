"""Evaluation figures as PNG files, one function per picture (primitives in ``cnnlab.figures``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from cnnlab.errors import CnnlabError
from cnnlab.evaluation.metrics import calibration_bins
from cnnlab.figures import as_rgb, grid_shape, mosaic, new_figure, save_figure, short

MAX_CM_CLASSES = 30  # above this, the confusion matrix shows the most-confused classes only


def _confused_subset(cm: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k classes with the most errors (as true or as predicted), in label order."""
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=0) + off.sum(axis=1)
    return np.sort(np.argsort(-errors, kind="stable")[:k])


def confusion_side(num_classes: int) -> float:
    """The side in inches of a confusion matrix figure: readable cells, bounded size."""
    return min(max(4.5, 0.38 * min(num_classes, MAX_CM_CLASSES) + 2.5), 14.0)


def plot_confusion_matrix(cm: np.ndarray, class_names: Sequence[str], out: Path, normalize: bool = False) -> Path:
    """The confusion matrix as a PNG (see :func:`draw_confusion_matrix`)."""
    side = confusion_side(len(class_names))
    fig = new_figure(side + 1.0, side)
    title = draw_confusion_matrix(fig.add_subplot(), cm, class_names, normalize)
    return save_figure(fig, out, title)


def draw_confusion_matrix(ax: Axes, cm: np.ndarray, class_names: Sequence[str], normalize: bool = False) -> str:
    """Heatmap of counts, or of row fractions (recall per true class), with values in each cell;
    returns the title it deserves.

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
    m, names = m[np.ix_(idx, idx)], [short(class_names[int(i)]) for i in idx]
    n = len(idx)
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else max(m.max(), 1))
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
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
    return title


def plot_most_confused(pairs: Sequence[tuple[str, str, int]], out: Path) -> Path:
    """Horizontal bars of the most frequent (true -> predicted) mistakes, largest on top."""
    fig = new_figure(7, min(max(2.5, 0.35 * len(pairs) + 1.2), 12))
    ax = fig.add_subplot()
    if pairs:
        labels = [f"{short(t)} → {short(p)}" for t, p, _ in pairs][::-1]
        counts = [c for _, _, c in pairs][::-1]
        bars = ax.barh(range(len(pairs)), counts, color="tab:red", alpha=0.8)
        ax.set_yticks(range(len(pairs)), labels, fontsize=8)
        ax.set_xlabel("test images")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.bar_label(bars, fontsize=7, padding=2)
    else:
        ax.text(0.5, 0.5, "no mistakes on the test set", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    return save_figure(fig, out, "Most confused (true → predicted)")


def plot_misclassified(
    images: np.ndarray,
    y_true: Sequence[int],
    y_pred: Sequence[int],
    confidence: Sequence[float],
    class_names: Sequence[str],
    out: Path,
    max_images: int = 25,
) -> Path:
    """Grid of wrongly classified images titled "true: X / pred: Y (87%)"."""
    n = min(len(images), max_images)
    rows, cols = grid_shape(n)
    fig = new_figure(2.2 * cols + 0.4, 2.4 * rows + 0.5)
    ax = fig.add_subplot()
    ax.set_axis_off()
    if n == 0:
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    else:  # one picture with a caption over each tile: many times faster to draw than an axes per image
        gap = max(3, images.shape[-1] // 6)  # room for a two-line caption above each tile
        picture = mosaic([as_rgb(np.asarray(images[i])) for i in range(n)], cols, gap, 1.0)
        ax.imshow(picture, interpolation="nearest" if images.shape[-1] < 64 else "antialiased")
        tile_h, tile_w = images.shape[-2] + gap, images.shape[-1] + gap
        for i in range(n):
            r, c = divmod(i, cols)
            ax.text(
                (c + 0.5) * tile_w - gap / 2,
                r * tile_h - gap / 8,
                f"true: {short(class_names[int(y_true[i])], 14)}\npred: {short(class_names[int(y_pred[i])], 14)}"
                f" ({float(confidence[i]):.0%})",
                ha="center",
                va="bottom",
                fontsize=8,
                color="firebrick",
            )
        ax.set_ylim(picture.shape[0], -gap)  # room above the first row's captions
    return save_figure(fig, out, f"Misclassified test images ({n} shown)")


def plot_per_class_accuracy(per_class_recall: Mapping[str, float], out: Path) -> Path:
    """Horizontal bars of recall per class, worst at the top, with the mean as a dashed line."""
    items = sorted(per_class_recall.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
    n = max(len(items), 1)
    fig = new_figure(7, min(max(2.5, 0.22 * n + 1.2), 20))
    ax = fig.add_subplot()
    values = [float(v) for _, v in items]
    ax.barh(range(len(items)), values, color=["tab:red" if v < 0.5 else "tab:blue" for v in values])
    ax.set_yticks(range(len(items)), [short(k) for k, _ in items], fontsize=8 if n <= 40 else 5)
    ax.set_xlim(0, 1)
    ax.set_xlabel("recall (fraction of the class's test images classified correctly)")
    if values:
        mean = float(np.mean(values))
        ax.axvline(mean, color="0.3", linestyle="--", linewidth=1, label=f"mean {mean:.1%}")
        # Above the bars, outside the axes: inside, a legend sits on some class's bar whatever its corner.
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.2)
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
