"""The lesson's convolution and pooling pictures, numbers written in the cells they belong to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from cnnlab.explain.demo_numbers import ConvResult
from cnnlab.figures import enlarge, mosaic, new_figure, save_figure, short, show_image

BLOCK_COLOURS = ("tab:red", "tab:blue", "tab:green", "tab:orange")


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value)}"


def draw_matrix(
    ax: Axes, values: torch.Tensor, title: str, cmap: str = "gray", vmin: float | None = None, vmax: float | None = None
) -> None:
    """A small matrix as coloured cells with each value written in its cell."""
    data = values.detach().float().numpy()
    low = float(data.min()) if vmin is None else vmin
    high = float(data.max()) if vmax is None else vmax
    if high == low:
        high = low + 1.0
    image = ax.imshow(data, cmap=cmap, vmin=low, vmax=high)
    font = 11 if data.shape[1] <= 4 else 9 if data.shape[1] <= 6 else 7
    if not np.all(data == np.round(data)):
        font -= 3  # "0.11" is wider than "1"
    for (i, j), value in np.ndenumerate(data):
        r, g, b, _ = image.cmap(image.norm(value))
        light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
        ax.text(
            j, i, _number(float(value)), ha="center", va="center", fontsize=font, color="black" if light else "white"
        )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def plot_lesson_conv(image: torch.Tensor, results: list[ConvResult], out: Path) -> Path:
    """One row per filter: the 6x6 image, the kernel, and the 4x4 feature map, every number shown."""
    fig = new_figure(9.5, 3.0 * len(results) + 0.6)
    axes = np.asarray(fig.subplots(len(results), 3, squeeze=False))
    peak = max(float(r.feature_map.abs().max()) for r in results) or 1.0
    for row, result in zip(axes, results):
        draw_matrix(row[0], image, "6x6 image (10 = bright, 0 = dark)", vmin=0, vmax=float(image.max()) or 1)
        k = float(result.kernel.abs().max()) or 1.0
        draw_matrix(row[1], result.kernel, f"* '{result.name}' filter", cmap="RdBu_r", vmin=-k, vmax=k)
        strength = "strong" if float(result.feature_map.abs().max()) >= 0.5 * peak else "weak"
        draw_matrix(
            row[2], result.feature_map, f"= feature map 4x4 ({strength} response)", cmap="RdBu_r", vmin=-peak, vmax=peak
        )
    return save_figure(fig, out, "Convolution: the lesson's vertical edge (torch conv2d, valid, stride 1)")


def plot_image_conv(gray: np.ndarray, results: list[ConvResult], out: Path, label: str) -> Path:
    """The user's grayscale image and each filter's feature map side by side, kernels above."""
    n = len(results)
    fig = new_figure(3.0 * (n + 1), 4.6)
    grid = fig.add_gridspec(2, n + 1, height_ratios=[1, 3])
    show_image(
        fig.add_subplot(grid[1, 0]), gray[None], f"{short(label, 24)}\n(grayscale, {gray.shape[1]}x{gray.shape[0]})"
    )
    for i, result in enumerate(results, 1):
        k = float(result.kernel.abs().max()) or 1.0
        draw_matrix(
            fig.add_subplot(grid[0, i]), result.kernel, f"'{result.name}' filter", cmap="RdBu_r", vmin=-k, vmax=k
        )
        fmap = result.feature_map.numpy()
        ax = fig.add_subplot(grid[1, i])
        if result.name in ("blur", "sharpen"):  # these keep an image, not signed edges
            ax.imshow(fmap, cmap="gray", vmin=0, vmax=255)
        else:  # signed responses: red one way, blue the other; the 99th percentile keeps outliers from washing it out
            limit = float(np.percentile(np.abs(fmap), 99)) or 1.0
            ax.imshow(fmap, cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_axis_off()
        ax.set_title(f"feature map {fmap.shape[1]}x{fmap.shape[0]}", fontsize=8)
    return save_figure(fig, out, "Convolution: the same filters on your image (torch conv2d, valid, stride 1)")


def _outline_blocks(ax: Axes, shape: tuple[int, int], size: int) -> None:
    for index, (top, left) in enumerate((y, x) for y in range(0, shape[0], size) for x in range(0, shape[1], size)):
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                size,
                size,
                fill=False,
                linewidth=3,
                edgecolor=BLOCK_COLOURS[index % len(BLOCK_COLOURS)],
            )
        )


def plot_lesson_pool(
    feature_map: torch.Tensor, biggest: torch.Tensor, mean: torch.Tensor, size: int, out: Path
) -> Path:
    """The 4x4 map with its pooling windows outlined, then the max- and average-pooled maps."""
    fig = new_figure(10, 3.8)
    axes = fig.subplots(1, 3, width_ratios=[2, 1, 1])
    high = float(feature_map.max())
    (h, w), (ph, pw) = feature_map.shape, biggest.shape
    draw_matrix(axes[0], feature_map, f"feature map {h}x{w}, {size}x{size} windows", cmap="Blues", vmin=0, vmax=high)
    _outline_blocks(axes[0], (h, w), size)
    draw_matrix(axes[1], biggest, f"max pooling → {ph}x{pw}", cmap="Blues", vmin=0, vmax=high)
    draw_matrix(axes[2], mean, f"average pooling → {ph}x{pw}", cmap="Blues", vmin=0, vmax=high)
    for ax in axes[1:]:
        _outline_blocks(ax, (ph, pw), 1)
    return save_figure(fig, out, f"Pooling: {size}x{size} windows, stride {size} (torch max_pool2d / avg_pool2d)")


def plot_image_pool(levels: dict[str, list[torch.Tensor]], size: int, out: Path, label: str) -> Path:
    """Rows max / average, columns the image and 1, 2, 3 poolings, each enlarged back to the same size."""
    side = int(levels["max"][0].shape[-1])
    count = len(levels["max"])
    tiles, titles = [], []
    for kind in ("max", "average"):
        for level, x in enumerate(levels[kind]):
            image = np.transpose(x.round().clamp(0, 255).numpy() / 255.0, (1, 2, 0))
            image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
            tiles.append(enlarge(image, side, side))  # pooled pixels stay visible as blocks
            shape = f"{x.shape[2]}x{x.shape[1]}"
            titles.append(f"{short(label, 24)} ({shape})" if level == 0 else f"{kind} pool x{level}: {shape}")
    gap, band = max(2, side // 40), side // 8
    tiles = [np.pad(t, ((band, 0), (0, 0), (0, 0)), constant_values=1.0) for t in tiles]
    picture = mosaic(tiles, count, gap, 1.0)
    ax = (fig := new_figure(2.6 * count, 2.6 * count * picture.shape[0] / picture.shape[1] + 0.5)).add_subplot()
    ax.imshow(picture, interpolation="nearest")
    for i, title in enumerate(titles):
        ax.text(
            (i % count) * (side + gap) + side / 2,
            (i // count) * (side + band + gap) + band - 2,
            title,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_axis_off()
    return save_figure(fig, out, f"Pooling {size}x{size} repeatedly: each step keeps 1/{size * size} of the values")
