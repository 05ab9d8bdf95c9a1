"""The figure toolkit every package draws with: one style, PNGs written atomically, no pyplot.

Figures are built on ``matplotlib.figure.Figure`` directly: no pyplot state and no GUI backend,
so plotting is safe from worker threads and on machines without a display. Sizes are fixed
(or bounded) in inches at :data:`DPI`, so a figure's pixel size is predictable. Like
``cnnlab.io``, this module sits below every package and imports none of them.
"""

from __future__ import annotations

import base64
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure, SubFigure
from matplotlib.ticker import MaxNLocator
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_bytes

DPI = 110
MAX_SAMPLE_ROWS = 20
SPLIT_STYLE = {"train": "--", "val": "-"}  # several runs on one axis: colour = run, line = split
SPLIT_MARKER = {"train": "-o", "val": "-s"}  # one run: colour and marker = split


def new_figure(width: float, height: float) -> Figure:
    """A figure of the given size in inches with constrained (tight) layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save_figure(fig: Figure, out: Path, title: str | None = None) -> Path:
    """Adds the title and writes the PNG atomically, so a report never embeds half a file."""
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold")
    atomic_write_bytes(Path(out), png_bytes(fig))
    return Path(out)


def png_bytes(fig: Figure, dpi: float = DPI) -> bytes:
    """The figure as PNG at its own size and ``dpi`` (no tight bbox: pixel size stays fixed).

    One draw, then Pillow encodes the pixels: ``savefig`` draws a figure with a layout engine
    twice (a dry run to lay it out, then the real one), which made the report's figures about
    30% slower (measured on three of them, same bytes within 1%).
    """
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    width, height = canvas.get_width_height()
    image = Image.frombuffer("RGBA", (width, height), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    buf = io.BytesIO()
    image.save(buf, format="png")
    return buf.getvalue()


def png_html(paths: Sequence[Path], max_width: str = "100%") -> str:
    """<img> tags with the PNG files inlined (for notebook summaries; missing files are left out)."""
    tags = []
    for path in paths:
        try:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        except OSError:
            continue
        tags.append(f"<img src='data:image/png;base64,{data}' style='max-width:{max_width};margin:2px'>")
    return "".join(tags)


def short(name: str, n: int = 18) -> str:
    """Truncates long class names so axis labels stay legible."""
    return name if len(name) <= n else name[: n - 1] + "…"


def show_image(ax: Axes, image: np.ndarray, title: str | None = None, **title_kwargs: Any) -> None:
    """Draws one uint8 image, (C, H, W) with C = 1 or 3, without ticks (gray colour map for C = 1)."""
    _check_chw(image)
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.transpose(image, (1, 2, 0)), vmin=0, vmax=255)
    ax.set_axis_off()
    if title:
        ax.set_title(title, **{"fontsize": 8, **title_kwargs})


def grid_shape(count: int, max_cols: int = 5) -> tuple[int, int]:
    """(rows, cols) of a near-square grid for ``count`` panels."""
    cols = max(1, min(max_cols, math.ceil(math.sqrt(max(count, 1)))))
    return max(1, math.ceil(count / cols)), cols


def plot_curves(
    histories: Mapping[str, pd.DataFrame], out: Path, title: str, splits: Sequence[str] = ("train", "val")
) -> Path:
    """Accuracy and loss per epoch, side by side (and the learning rate, for one run): the one plot
    of training curves.

    Args:
        histories: label -> history (``cnnlab.training.history`` columns: ``epoch`` counted
            through all stages from 1, ``stage``, ``train_acc``, ``val_loss``, ``lr``, ...).
            With one history, stage hand-overs are marked and the learning rate has its own panel.
        splits: which of train / val to draw.
    """
    fig = new_figure(11, 4.2)
    draw_curves(curve_axes(fig, histories), histories, splits)
    return save_figure(fig, out, title)


def _lr_of(histories: Mapping[str, pd.DataFrame]) -> pd.Series | None:
    """The learning rate per epoch of a single run's history, or None (several runs, or none recorded)."""
    if len(histories) != 1:
        return None
    (h,) = histories.values()
    if h is None or "lr" not in h:
        return None
    lr = pd.to_numeric(h["lr"], errors="coerce").reset_index(drop=True)
    return lr if (lr > 0).any() else None


def curve_axes(fig: Figure | SubFigure, histories: Mapping[str, pd.DataFrame]) -> list[Axes]:
    """The panels :func:`draw_curves` fills on ``fig`` (a figure or subfigure): accuracy and loss,
    plus a narrower learning-rate panel when a single run recorded its rate."""
    if _lr_of(histories) is None:
        return list(fig.subplots(1, 2))
    return list(fig.subplots(1, 3, width_ratios=[1, 1, 0.55]))


def draw_curves(
    axes: Sequence[Axes], histories: Mapping[str, pd.DataFrame], splits: Sequence[str] = ("train", "val")
) -> None:
    """Draws :func:`plot_curves`' panels on the given axes: accuracy, loss, and with a third axes
    (:func:`curve_axes`) the learning rate; with two, rate changes are ticks on the x axis."""
    if not histories or all(h is None or len(h) == 0 for h in histories.values()):
        raise CnnlabError("the training history is empty: nothing to plot")
    single = len(histories) == 1
    lr = _lr_of(histories)
    if lr is not None and len(axes) > 2:
        (h,) = histories.values()
        _draw_lr(axes[2], h.reset_index(drop=True), lr)
    for ax, metric in zip(axes, ("acc", "loss")):
        drew = False
        for index, (label, h) in enumerate(histories.items()):
            h = h.reset_index(drop=True)
            x = h["epoch"]  # counted from 1, as the log lines count them
            for split in splits:
                column = f"{split}_{metric}"
                if column not in h or not h[column].notna().any():
                    continue
                ok = h[column].notna()
                if single:
                    ax.plot(x[ok], h[column][ok], SPLIT_MARKER[split], markersize=3, label=split)
                else:
                    name = label if len(splits) == 1 else f"{split} ({label})"
                    ax.plot(x[ok], h[column][ok], SPLIT_STYLE[split], color=f"C{index}", label=name)
                drew = True
            if single:
                _mark_stages(ax, h, x)
                if len(axes) < 3:
                    _mark_lr(ax, h, x)
        ax.set_title("Accuracy" if metric == "acc" else "Loss")
        _epoch_axis(ax)
        if drew:
            ax.legend(loc="best", fontsize=8)
        else:
            ax.text(0.5, 0.5, f"no {metric} recorded", ha="center", va="center", transform=ax.transAxes)


def _epoch_axis(ax: Axes, bins: int | None = None) -> None:
    """Whole epochs on the x axis (at most ``bins`` ticks; a range around a single epoch, not
    0.95 ... 1.05), and a light grid."""
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=bins or "auto", integer=True))
    low, high = ax.get_xlim()
    if high - low < 2:
        middle = round((low + high) / 2)
        ax.set_xlim(middle - 1, middle + 1)
    ax.grid(alpha=0.3)


def _mark_stages(ax: Axes, h: pd.DataFrame, x: pd.Series, names: bool = True) -> None:
    """A dashed line where one stage hands over to the next, and (``names``) each stage's name at its start."""
    stage = h["stage"].ffill() if "stage" in h else pd.Series(dtype=object)
    if stage.nunique() < 2:
        return  # a single stage ("train") needs no marking
    for i in range(len(h)):
        if pd.notna(stage[i]) and (i == 0 or stage[i] != stage[i - 1]):
            xb = x[0] if i == 0 else (x[i - 1] + x[i]) / 2
            if i:
                ax.axvline(xb, color="0.4", linestyle="--", linewidth=1)
            if names:
                ax.text(xb, 0.98, f" {stage[i]}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")


def _draw_lr(ax: Axes, h: pd.DataFrame, lr: pd.Series) -> None:
    """The learning rate per epoch as its own small panel (log scale): a schedule reads as a curve."""
    ok = lr > 0
    x = h["epoch"]
    ax.plot(x[ok], lr[ok], "-o" if ok.sum() <= 30 else "-", markersize=2.5, color="tab:purple")
    ax.set_yscale("log")
    low, high = float(lr[ok].min()), float(lr[ok].max())
    if low == high:  # one rate all along: centred, not on the edge of a decade
        ax.set_ylim(low / 3, high * 3)
    ax.set_title("Learning rate")
    ax.tick_params(axis="y", labelsize=8)
    _mark_stages(ax, h, x, names=False)  # a narrow panel: the stage names are on the others
    _epoch_axis(ax, bins=4)


def _mark_lr(ax: Axes, h: pd.DataFrame, x: pd.Series) -> None:
    """Small triangles on the x axis where lr changed (when no panel of its own shows the rate);
    named only when the changes are steps far enough apart for their labels."""
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
    # A per-epoch schedule (cosine, one-cycle, even a short one within one stage) changes lr at
    # every epoch and its labels would pile up: steps only, each label a seventh of the axis apart.
    span = max(float(x.max() - x.min()), 1.0)
    positions = [float(xi) for xi, _ in changes]
    steps = len(changes) <= 6 and all(b - a >= span / 7 for a, b in itertools.pairwise(positions))
    for xi, v in changes:
        ax.plot([xi], [0.0], marker="^", color="tab:purple", markersize=6, transform=trans, clip_on=False)
        if steps:  # aligned away from the nearer edge so the label is not cut off
            ha = "right" if xi > (x.min() + x.max()) / 2 else "left"
            ax.text(xi, 0.04, f" lr {v:.0e} ", transform=trans, fontsize=7, color="tab:purple", ha=ha)


def _check_chw(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise CnnlabError(f"images must be (N, C, H, W) with C = 1 or 3, got an image of shape {image.shape}")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A (C, H, W) uint8 image (C = 1 or 3) as an (H, W, 3) float picture in [0, 1], for :func:`mosaic`."""
    _check_chw(image)
    return np.transpose(np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image, (1, 2, 0)) / 255.0


def plot_samples_per_class(
    images: np.ndarray, labels: Sequence[int] | np.ndarray, class_names: Sequence[str], out: Path, per_class: int = 8
) -> Path:
    """The lesson's sample grid: one row per class (first 20 classes), ``per_class`` images each."""
    label_array = np.asarray(labels)
    shown = list(range(min(len(class_names), MAX_SAMPLE_ROWS)))
    side = images.shape[-2:]
    blank = np.ones((*side, 3))
    tiles = []
    for c in shown:
        picks = np.flatnonzero(label_array == c)[:per_class]
        tiles += [as_rgb(np.asarray(images[i])) for i in picks] + [blank] * (per_class - len(picks))
    fig = new_figure(1.1 * per_class + 1.4, 1.1 * len(shown) + 0.6)
    ax = fig.add_subplot()
    picture = mosaic(tiles, per_class, max(1, side[-1] // 14), 1.0)  # one image: fast to draw
    ax.imshow(picture, interpolation="nearest" if side[-1] < 64 else "antialiased")
    row_height = picture.shape[0] / max(len(shown), 1)
    ax.set_yticks(
        [row_height * (r + 0.5) for r in range(len(shown))], [short(class_names[c], 14) for c in shown], fontsize=9
    )
    ax.set_xticks([])
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    title = "Samples per class"
    if len(class_names) > MAX_SAMPLE_ROWS:
        title += f" (first {MAX_SAMPLE_ROWS} of {len(class_names)} classes)"
    return save_figure(fig, out, title)


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
    names = [short(c) for c in classes]
    rotate = n * max(map(len, names), default=0) > 50  # upright labels only while they fit side by side
    ax.set_xticks(range(len(classes)), names, rotation=90 if rotate else 0, fontsize=font)
    ax.set_ylabel("images")
    if splits:
        ax.legend(fontsize=8)
    return save_figure(fig, out, "Images per class and split")


def mosaic(tiles: Sequence[np.ndarray], cols: int, gap: int, fill: float) -> np.ndarray:
    """Equal-sized (H, W[, 3]) tiles in a grid with ``gap`` pixels of ``fill`` between them.

    Drawn as one image on one axes, a grid of pictures renders many times faster than one axes
    per picture (each costs matplotlib's layout engine tens of milliseconds).
    """
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap, *tiles[0].shape[2:]), fill, dtype=np.float32)
    for i, tile in enumerate(tiles):
        top, left = (i // cols) * (h + gap), (i % cols) * (w + gap)
        out[top : top + h, left : left + w] = tile
    return out


def enlarge(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of an (H, W[, C]) array: every source pixel stays a visible block."""
    rows = np.minimum(np.arange(height) * image.shape[0] // height, image.shape[0] - 1)
    cols = np.minimum(np.arange(width) * image.shape[1] // width, image.shape[1] - 1)
    return image[rows][:, cols]
