"""The lesson's convolution and pooling demos: its numbers, computed by the operations models use.

Every number drawn or printed comes from ``torch.nn.functional.conv2d`` / ``max_pool2d`` /
``avg_pool2d`` (what ``nn.Conv2d`` and the pooling layers call), never from a Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError, suggest

# The lesson's 6x6 image of a vertical edge: bright (10) on the left half, dark (0) on the right.
EDGE_IMAGE = torch.tensor([[10.0, 10, 10, 0, 0, 0]] * 6)

# Named 3x3 filters. "vertical"/"horizontal" are the lesson's edge detectors (Prewitt's kernels:
# rows of 1, 0, -1); the Sobel ones weigh the centre row/column twice.
FILTERS: dict[str, torch.Tensor] = {
    "vertical": torch.tensor([[1.0, 0, -1], [1, 0, -1], [1, 0, -1]]),
    "horizontal": torch.tensor([[1.0, 1, 1], [0, 0, 0], [-1, -1, -1]]),
    "sobel-v": torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]]),
    "sobel-h": torch.tensor([[1.0, 2, 1], [0, 0, 0], [-1, -2, -1]]),
    "laplacian": torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]),
    "blur": torch.full((3, 3), 1.0 / 9),
    "sharpen": torch.tensor([[0.0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
}
LESSON_FILTERS = ("vertical", "horizontal")
FILTER_NOTES = {
    "vertical": "vertical edges (bright left, dark right: positive)",
    "horizontal": "horizontal edges (bright top, dark bottom: positive)",
    "sobel-v": "vertical edges, centre row weighted twice (Sobel)",
    "sobel-h": "horizontal edges, centre column weighted twice (Sobel)",
    "laplacian": "edges and fine detail in every direction (second derivative)",
    "blur": "a 3x3 average: smooths noise and detail",
    "sharpen": "the image plus its edges: crisper detail",
}

# The lesson's 4x4 feature map. Each 2x2 block has the max and the mean the lesson shows:
# top-left 1,3,5,6 (max 6, mean 15/4 = 3.75), top-right 2,4,1,3 (4, 2.5),
# bottom-left 3,2,1,4 (4, 2.5), bottom-right 1,8,6,7 (8, 22/4 = 5.5).
FEATURE_MAP = torch.tensor([[1.0, 3, 2, 4], [5, 6, 1, 3], [3, 2, 1, 8], [1, 4, 6, 7]])


@dataclass(frozen=True)
class ConvResult:
    """One filter applied to an image: the kernel and the feature map (valid convolution, stride 1)."""

    name: str
    kernel: torch.Tensor  # (3, 3)
    feature_map: torch.Tensor  # (H - 2, W - 2)


def parse_filters(text: str | None) -> list[str]:
    """``"sobel-v,blur"`` -> ["sobel-v", "blur"]; None -> the lesson's two edge filters.

    Raises:
        CnnlabError: an unknown filter name.
    """
    if text is None:
        return list(LESSON_FILTERS)
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in FILTERS:
            raise CnnlabError(
                f"--filters: unknown filter '{name}'" + suggest(name, FILTERS, f"choose from {', '.join(FILTERS)}")
            )
    if not names:
        raise CnnlabError(f"--filters needs at least one of {', '.join(FILTERS)}")
    return list(dict.fromkeys(names))


def convolve(image: torch.Tensor, names: list[str]) -> list[ConvResult]:
    """Each named filter over a 2-D image with ``F.conv2d`` (no padding, stride 1), as a Conv2d layer does.

    ``F.conv2d`` computes a cross-correlation (the kernel is not flipped), like every CNN library:
    the kernel's top-left number multiplies the window's top-left pixel.
    """
    kernels = torch.stack([FILTERS[name] for name in names]).unsqueeze(1)  # (filters, 1, 3, 3)
    maps = F.conv2d(image.float()[None, None], kernels)[0]
    return [ConvResult(name, FILTERS[name], maps[i]) for i, name in enumerate(names)]


def pool(feature_map: torch.Tensor, size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(max, average) pooling of an (H, W) or (C, H, W) map with a ``size`` x ``size`` window and stride."""
    x = feature_map.float()
    batch = x[None, None] if x.ndim == 2 else x[None]
    biggest = F.max_pool2d(batch, size)[0]
    mean = F.avg_pool2d(batch, size)[0]
    return (biggest[0], mean[0]) if x.ndim == 2 else (biggest, mean)


def pool_levels(image: torch.Tensor, size: int, levels: int = 3) -> dict[str, list[torch.Tensor]]:
    """``image`` (C, H, W) and the results of 1..``levels`` successive poolings, max and average.

    Raises:
        CnnlabError: the image is too small for that many poolings.
    """
    side = min(image.shape[-2:])
    if side < size**levels:
        raise CnnlabError(
            f"the image is {side} px: too small for {levels} poolings of {size}x{size}; "
            f"use a larger image or a smaller --size"
        )
    out: dict[str, list[torch.Tensor]] = {"max": [image.float()], "average": [image.float()]}
    for _ in range(levels):
        out["max"].append(F.max_pool2d(out["max"][-1][None], size)[0])
        out["average"].append(F.avg_pool2d(out["average"][-1][None], size)[0])
    return out


def conv_explanation(results: list[ConvResult], on_lesson_image: bool) -> str:
    """The short text printed with the conv figure: what each filter found, with its numbers."""
    lines = []
    if on_lesson_image:
        lines += [
            "The 6x6 image has a vertical edge: 10 (bright) in the left three columns, 0 (dark) in the right three.",
            "A 3x3 filter slides over it one pixel at a time (stride 1, no padding): 6 - 3 + 1 = 4 positions",
            "each way, so each feature map is 4x4. Each cell is the sum of the 9 pixels times the 9 weights.",
        ]
    for result in results:
        fmap = result.feature_map
        strength = fmap.abs().mean().item()
        lines.append(
            f"{result.name}: {FILTER_NOTES[result.name]}; mean |response| {strength:.3g}, "
            f"range {fmap.min().item():.3g} to {fmap.max().item():.3g}"
        )
        if on_lesson_image:
            rows = "  ".join("[" + " ".join(f"{v:g}" for v in row.tolist()) + "]" for row in fmap)
            lines.append(f"  feature map rows: {rows}")
    by_name = {r.name: r.feature_map for r in results}
    if on_lesson_image and {"vertical", "horizontal"} <= set(by_name):
        peak, flat = by_name["vertical"].max().item(), by_name["horizontal"].abs().max().item()
        lines.append(
            f"The vertical filter responds strongly ({peak:g}) where the window straddles the edge and 0 "
            f"on flat areas; the horizontal one stays at {flat:g}: there is no horizontal edge. "
            "A trained CNN learns filters like these by itself."
        )
    return "\n".join(lines)


def pool_explanation(feature_map: torch.Tensor, size: int, biggest: torch.Tensor, mean: torch.Tensor) -> str:
    """The short text printed with the lesson's pooling figure."""

    def fmt(t: torch.Tensor) -> str:
        return "[" + ", ".join("[" + ", ".join(f"{v:g}" for v in row.tolist()) + "]" for row in t) + "]"

    (h, w), (ph, pw) = feature_map.shape, biggest.shape
    return "\n".join(
        [
            f"A {size}x{size} window moves {size} cells at a time over the {h}x{w} map: each window becomes one cell.",
            f"max pooling keeps the strongest response of each window: {fmt(biggest)}",
            f"average pooling keeps their mean: {fmt(mean)}",
            (
                f"size {h}x{w} -> {ph}x{pw}: {h * w} values -> {ph * pw} ({ph * pw / (h * w):.0%}), the exact position "
                "inside each window is lost, which makes the next layers tolerant of small shifts."
            ),
        ]
    )
