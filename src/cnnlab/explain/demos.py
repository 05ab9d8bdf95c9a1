"""``cnnlab explain conv`` and ``explain pool``: the lesson's pictures, or the same on the user's image."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.explain import demo_numbers as lesson
from cnnlab.explain.demo_figures import plot_image_conv, plot_image_pool, plot_lesson_conv, plot_lesson_pool
from cnnlab.explain.settings import ConvOptions, PoolOptions
from cnnlab.figures import png_html

POOL_LEVELS = 3
SHOWN_SIDE = 256  # px: larger photos are shrunk first (a panel is a few inches wide anyway)


@dataclass(frozen=True)
class Demo:
    """What a demo wrote and the explanation it prints."""

    written: list[Path]
    text: str

    def _repr_html_(self) -> str:  # in a notebook: the pictures and the explanation
        return f"{png_html(self.written)}<pre>{html.escape(self.text)}</pre>"


def _load(image: Path) -> np.ndarray:
    """The user's image as (C, H, W) uint8, at most 256 px, centre-cropped square as training does."""
    from cnnlab.data.decode import decode_for_display

    if not Path(image).is_file():
        raise CnnlabError(f"--image {image} not found; give an image file (.png, .jpg, ...)")
    array = decode_for_display(Path(image), SHOWN_SIDE, what="--image")
    return array[None] if array.ndim == 2 else np.transpose(array, (2, 0, 1)).copy()


def _grayscale(image: np.ndarray) -> np.ndarray:
    """(C, H, W) uint8 -> (H, W) uint8 luminance, as training converts colour for 1-channel models."""
    from cnnlab.data.prepare import convert_images

    return convert_images(torch.from_numpy(image)[None], 1, None)[0, 0].numpy()


def conv_demo(options: ConvOptions) -> Demo:
    """The lesson's 6x6 edge image (or ``options.image`` in grayscale) through the named 3x3 filters.

    Writes ``conv.png`` (or ``conv_<image name>.png``) to ``options.out``.
    """
    image, out = options.image, options.out
    names = lesson.parse_filters(options.filters)
    if image is None:
        results = lesson.convolve(lesson.EDGE_IMAGE, names)
        path = plot_lesson_conv(lesson.EDGE_IMAGE, results, Path(out) / "conv.png")
        return Demo([path], lesson.conv_explanation(results, on_lesson_image=True))
    gray = _grayscale(_load(Path(image)))
    results = lesson.convolve(torch.from_numpy(gray).float(), names)
    path = plot_image_conv(gray, results, Path(out) / f"conv_{Path(image).stem}.png", Path(image).name)
    text = (
        f"{Path(image).name} in grayscale ({gray.shape[1]}x{gray.shape[0]}) through each filter: "
        f"feature maps {gray.shape[1] - 2}x{gray.shape[0] - 2} (valid convolution, stride 1).\n"
    )
    return Demo([path], text + lesson.conv_explanation(results, on_lesson_image=False))


def pool_demo(options: PoolOptions) -> Demo:
    """The lesson's 4x4 map pooled once (or ``options.image`` pooled 1, 2 and 3 times), max and average.

    Writes ``pool.png`` (or ``pool_<image name>.png``) to ``options.out``.
    """
    image, size, out = options.image, options.size, options.out
    if image is None:
        fmap = lesson.FEATURE_MAP
        if size > min(fmap.shape):
            raise CnnlabError(f"--size {size} is larger than the lesson's {fmap.shape[0]}x{fmap.shape[1]} map; use 2")
        biggest, mean = lesson.pool(fmap, size)
        path = plot_lesson_pool(fmap, biggest, mean, size, Path(out) / "pool.png")
        return Demo([path], lesson.pool_explanation(fmap, size, biggest, mean))
    pixels = torch.from_numpy(_load(Path(image)))
    levels = lesson.pool_levels(pixels.float(), size, POOL_LEVELS)
    path = plot_image_pool(levels, size, Path(out) / f"pool_{Path(image).stem}.png", Path(image).name)
    sides = " -> ".join(f"{x.shape[2]}x{x.shape[1]}" for x in levels["max"])
    kept = 1 / (size * size) ** POOL_LEVELS
    text = (
        f"{Path(image).name}: {sides} after 1, 2 and {POOL_LEVELS} poolings of {size}x{size} "
        f"(each keeps 1/{size * size} of the values, {kept:.2%} after {POOL_LEVELS}).\n"
        "Max pooling keeps the brightest pixel of each window (edges and highlights survive); average pooling "
        "blurs. Detail is lost at every step, but what is left still shows what the image contains."
    )
    return Demo([path], text)
