"""What a CNN does and what a trained one looks at: the lesson's pictures, live.

``lesson``/``demos``: convolution and pooling on the lesson's numbers or the user's image.
``layers``: which layers a network has and which can be hooked. ``cam``: heat maps
(through the ``grad-cam`` package). ``receptive``: receptive fields along the network's graph.
``commands``: one function per ``cnnlab explain`` command on a run folder. ``settings``: their
options, declared once for the flags and the functions below (which check them as the CLI does).
``report``: the run report's Explain figures, drawn at the end of training (``cnnlab.evaluation`` calls it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.explain.settings import ConvOptions, FeatureMapsOptions, FiguresOptions, GradcamOptions, PoolOptions

if TYPE_CHECKING:  # the functions import their modules when called
    from cnnlab.explain.commands import Explanation
    from cnnlab.explain.demos import Demo

# ``run`` below is a run folder's path, or a ``cnnlab.Run`` (anything with a ``path``).


def _path(run: Any) -> Path:
    return Path(getattr(run, "path", run))


def _items(images: Sequence[str | Path] | str | Path) -> list[str]:
    return [str(images)] if isinstance(images, (str, Path)) else [str(i) for i in images]


def conv(image: str | Path | None = None, filters: str | None = None, out: str | Path = ".") -> Demo:
    """What 3x3 filters do: the lesson's 6x6 edge image, or ``image`` (as ``cnnlab explain conv``)."""
    from cnnlab.explain.demos import conv_demo

    return conv_demo(ConvOptions.of({"image": image, "filters": filters, "out": out}, "explain conv"))


def pool(image: str | Path | None = None, size: int = 2, out: str | Path = ".") -> Demo:
    """What max and average pooling keep: the lesson's 4x4 map, or ``image`` at 1-3 levels."""
    from cnnlab.explain.demos import pool_demo

    return pool_demo(PoolOptions.of({"image": image, "size": size, "out": out}, "explain pool"))


def filters(run: Any, out: str | Path | None = None) -> Explanation:
    """A run's first-layer kernels as an image grid."""
    from cnnlab.explain.commands import explain_filters

    return explain_filters(_path(run), FiguresOptions.of({"out": out}, "explain filters"))


def feature_maps(
    run: Any, images: Sequence[str | Path] | str | Path, layers: list[str] | None = None, out: str | Path | None = None
) -> Explanation:
    """What a few layers (early to late, or ``layers``) of a run's network output for ``images``."""
    from cnnlab.explain.commands import explain_feature_maps

    options = FeatureMapsOptions.of({"layers": layers, "out": out}, "explain feature-maps")
    return explain_feature_maps(_path(run), _items(images), options)


def gradcam(
    run: Any,
    images: Sequence[str | Path] | str | Path,
    class_name: str | None = None,
    method: str = "gradcam",
    layer: str | None = None,
    out: str | Path | None = None,
) -> Explanation:
    """Where a run's network looks to classify ``images`` (files or folders): heat maps over each image."""
    from cnnlab.explain.commands import explain_gradcam

    options = {"class_name": class_name, "method": method, "layer": layer, "out": out}
    return explain_gradcam(_path(run), _items(images), GradcamOptions.of(options, "explain gradcam"))


def receptive_field(run: Any, out: str | Path | None = None) -> Explanation:
    """Per layer of a run's network: output size, stride and receptive field."""
    from cnnlab.explain.commands import explain_receptive_field

    return explain_receptive_field(_path(run), FiguresOptions.of({"out": out}, "explain receptive-field"))
