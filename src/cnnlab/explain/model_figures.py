"""Pictures of a trained network: its first filters, feature maps, Grad-CAM heat maps, receptive fields."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from cnnlab.explain.receptive import FieldRow
from cnnlab.figures import enlarge, mosaic, new_figure, save_figure, short

MAX_FILTERS = 64
MAPS_PER_LAYER = 8
HEAT_ALPHA = 0.45  # enough colour to read the map, enough image to see what it covers


@dataclass(frozen=True)
class CamPanel:
    """One explained image: uint8 (C, H, W), its heat map (H, W) in [0, 1], and the labels to write."""

    image: np.ndarray
    heat: np.ndarray
    label: str
    predicted: str
    probability: float
    explained: str  # the class the heat map explains
    true: str | None = None
    explained_probability: float | None = None  # when it is not the predicted class
    evidence: bool = True  # False: nothing raised the explained class's score, the map is flat


CAM_SCALE = (
    "evidence for the class the map explains (the prediction, unless the title names another)\n"
    "each map scaled to its own peak"
)
EIGENCAM_SCALE = "activation of the layer's main pattern (class-agnostic)\neach map scaled to its own peak"


def plot_filters(weight: torch.Tensor, layer: str, out: Path) -> Path:
    """The first convolution's kernels as a grid (RGB kernels in colour, others red = positive)."""
    kernels = weight.detach().float().cpu().numpy()[:MAX_FILTERS]
    out_c, in_c, kh, kw = weight.shape
    cols = min(len(kernels), 8)
    ax = (fig := new_figure(0.9 * cols + 0.6, 0.9 * -(-len(kernels) // cols) + 1.0)).add_subplot()
    if in_c == 3:  # each kernel scaled to its own range, as colour: the classic picture of first filters
        low = kernels.min(axis=(1, 2, 3), keepdims=True)
        span = np.maximum(kernels.max(axis=(1, 2, 3), keepdims=True) - low, 1e-12)
        tiles = [np.transpose(k, (1, 2, 0)) for k in (kernels - low) / span]
        ax.imshow(mosaic(tiles, cols, 1, 1.0), interpolation="nearest")
        colour = "colour: each kernel scaled to its own range"
    else:  # signed weights, averaged over input channels
        tiles = list(kernels.mean(axis=1))
        limit = float(np.abs(kernels.mean(axis=1)).max()) or 1.0
        cmap = colormaps["RdBu_r"].with_extremes(bad="white")
        ax.imshow(mosaic(tiles, cols, 1, np.nan), cmap=cmap, vmin=-limit, vmax=limit, interpolation="nearest")
        colour = "red = positive, blue = negative weight"
    ax.set_axis_off()
    more = f", first {len(kernels)} of {out_c}" if len(kernels) < out_c else ""
    return save_figure(
        fig, out, f"First-layer filters: {layer}, {out_c} kernels {kh}x{kw} over {in_c} channel(s){more}\n({colour})"
    )


def plot_feature_maps(image: np.ndarray, maps: Sequence[tuple[str, torch.Tensor]], out: Path, label: str) -> Path:
    """The image, then per layer (rows early to late) its most active channels, each scaled to its own range."""
    side = max(64, max(int(m.shape[-1]) for _, m in maps))
    tiles, names = [], []
    for name, fmap in maps:
        values = fmap.detach().float().cpu()
        order = values.flatten(1).mean(1).argsort(descending=True)[:MAPS_PER_LAYER].tolist()
        tiles.append(enlarge(_rgb(image), side, side))
        for channel in order:
            x = values[channel].numpy()
            x = (x - x.min()) / (float(x.max() - x.min()) or 1.0)
            tiles.append(enlarge(colormaps["viridis"](x)[..., :3], side, side))
        tiles += [np.ones((side, side, 3), dtype=np.float32)] * (MAPS_PER_LAYER - len(order))
        c, h, w = values.shape
        names.append((f"{short(name, 26)}: {c} x {h}x{w}", order))
    gap = max(2, side // 16)
    band = side // 4  # room for the row's title
    rows = [
        np.pad(r, ((band, 0), (0, 0), (0, 0)), constant_values=1.0)
        for r in (
            mosaic(tiles[i : i + MAPS_PER_LAYER + 1], MAPS_PER_LAYER + 1, gap, 1.0)
            for i in range(0, len(tiles), MAPS_PER_LAYER + 1)
        )
    ]
    picture = mosaic(rows, 1, gap, 1.0)
    width = 1.25 * (MAPS_PER_LAYER + 1)
    ax = (fig := new_figure(width, width * picture.shape[0] / picture.shape[1] + 0.5)).add_subplot()
    ax.imshow(picture, interpolation="nearest")
    for row, (title, order) in enumerate(names):
        top = row * (band + side + gap)
        ax.text(0, top + band - 2, f"{title}   channels {', '.join(f'#{c}' for c in order)}", fontsize=7, va="bottom")
    ax.set_axis_off()
    return save_figure(
        fig,
        out,
        f"Feature maps of {short(label, 40)}: the {MAPS_PER_LAYER} most active channels per layer (yellow = strong)",
    )


def _rgb(image: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) -> float (H, W, 3) in [0, 1]; gray repeated."""
    x = np.transpose(image, (1, 2, 0)).astype(np.float32) / 255.0
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The image with the heat map blended over it in the jet colours (red = most)."""
    return (1 - HEAT_ALPHA) * _rgb(image) + HEAT_ALPHA * colormaps["jet"](np.clip(heat, 0, 1))[..., :3]


def _cam_title(panel: CamPanel) -> tuple[str, str]:
    """At most three lines over the map: the prediction, the truth, the class the map is for (or
    that the photo holds no evidence for it)."""
    text = f"pred: {short(panel.predicted, 16)} ({panel.probability:.0%})"
    if panel.true is not None:
        text += f"\ntrue: {short(panel.true, 16)}"
    chance = "" if panel.explained_probability is None else f" ({panel.explained_probability:.0%})"
    if panel.explained != panel.predicted:
        text += f"\n{'no evidence for' if not panel.evidence else 'map for'}: {short(panel.explained, 16)}{chance}"
    elif not panel.evidence:
        text += "\nno evidence for it: flat map"
    colour = "black" if panel.true is None else "darkgreen" if panel.true == panel.predicted else "firebrick"
    return text, colour


def _colour_bar(fig: Figure, ax: Axes, label: str) -> None:
    """What the overlay's colours mean, under the pictures: low (blue) to high (red)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize as Scale

    bar = fig.colorbar(
        ScalarMappable(Scale(0, 1), colormaps["jet"]),
        ax=ax,
        orientation="horizontal",
        shrink=0.6,
        aspect=30,
        pad=0.02,
        ticks=[0, 1],
    )
    bar.ax.set_xticklabels(["low", "high"], fontsize=7)
    bar.set_label(label, fontsize=7)


def gradcam_figure(
    panels: Sequence[CamPanel], per_row: int = 2, inches: float | None = None, scale: str = CAM_SCALE
) -> Figure:
    """Each image beside its heat map overlay, titled with the prediction (and truth when known), above
    a colour bar saying what the colours mean (``scale``).

    ``inches``: the width of each picture; by default 1.3-1.7 by image size (small images need
    fewer pixels, and every pixel costs PNG-encoding time after each training run).
    """
    h, w = panels[0].heat.shape
    inches = inches or min(1.7, max(1.3, w / 60))
    gap = max(2, w // 24)
    band = int(np.ceil(0.4 * w / inches))  # image pixels for three lines of 7-point title (0.4 in) per row
    tiles = []
    for panel in panels:
        pair = np.ones((band + h, 2 * w + gap, 3), dtype=np.float32)
        pair[band:, :w], pair[band:, w + gap :] = _rgb(panel.image), overlay(panel.image, panel.heat)
        tiles.append(pair)
    cols = min(per_row, len(panels))
    picture = mosaic(tiles, cols, 2 * gap, 1.0)
    width = 2 * cols * inches + 0.2
    ax = (fig := new_figure(width, width * picture.shape[0] / picture.shape[1] + 0.9)).add_subplot()
    ax.imshow(picture)  # matplotlib's "auto": pixels kept when enlarged (small PNGs), smoothed when shrunk
    for i, panel in enumerate(panels):
        top, left = (i // cols) * (band + h + 2 * gap), (i % cols) * (2 * w + 3 * gap)
        text, colour = _cam_title(panel)
        ax.text(left + w / 2, top + band - 2, short(panel.label, 28), ha="center", va="bottom", fontsize=7)
        ax.text(left + 1.5 * w + gap, top + band - 2, text, ha="center", va="bottom", fontsize=7, color=colour)
        if not panel.evidence:  # on the map itself: an all-blue map is no "look here"
            ax.text(
                left + 1.5 * w + gap,
                top + band + h / 2,
                "no evidence",
                ha="center",
                va="center",
                fontsize=7,
                color="white",
                bbox={"facecolor": "black", "alpha": 0.6, "linewidth": 0},
            )
    ax.set_axis_off()
    _colour_bar(fig, ax, scale)
    return fig


def plot_gradcam(
    panels: Sequence[CamPanel],
    out: Path,
    title: str,
    per_row: int = 2,
    inches: float | None = None,
    scale: str = CAM_SCALE,
) -> Path:
    """:func:`gradcam_figure` written to ``out`` under ``title``."""
    return save_figure(gradcam_figure(panels, per_row, inches, scale), out, title)


def plot_receptive_fields(rows: Sequence[FieldRow], side: int, out: Path, model_name: str) -> Path:
    """Receptive field and output side per layer, with the image side for scale."""
    fig = new_figure(max(7.0, min(0.16 * len(rows) + 3, 16.0)), 4.6)
    ax = fig.add_subplot()
    x = np.arange(1, len(rows) + 1)
    ax.plot(x, [max(r.field) for r in rows], "-o", markersize=3, color="tab:red", label="receptive field (px)")
    ax.plot(x, [max(r.size) for r in rows], "-s", markersize=3, color="tab:blue", label="output side (px)")
    ax.axhline(side, color="0.3", linestyle="--", linewidth=1, label=f"image side ({side} px)")
    ax.set_yscale("log")
    ax.set_xlabel("convolution / pooling layer, in forward order")
    ax.set_ylabel("pixels")
    labels = [short(r.name, 24) for r in rows]
    step = max(1, len(rows) // 25)  # at most ~25 names under the axis
    ax.set_xticks(x[::step], labels[::step], rotation=90, fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return save_figure(fig, out, f"Receptive fields of {model_name}: what one output of each layer can see")
