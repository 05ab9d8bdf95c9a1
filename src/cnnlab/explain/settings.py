"""The options of ``cnnlab explain ...``, declared once: the CLI builds its flags from them and
``cnnlab.explain.*`` creates them, so both accept the same values and refuse the others with the same
message. Free of heavy imports (no torch), so ``cnnlab explain --help`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from cnnlab.config.schema import CommandOptions, option
from cnnlab.errors import CnnlabError

CamMethod = Literal["gradcam", "gradcam++", "eigencam"]
CAM_METHODS: tuple[str, ...] = get_args(CamMethod)


def run_out_option() -> Any:
    """``--out`` of the commands on a run folder."""
    return option(None, "folder for the figures (default: RUN/explain)", metavar="DIR")


def lesson_out_option() -> Any:
    """``--out`` of the lesson's demos (conv, pool), which have no run folder."""
    return option(".", "folder for the figures", metavar="DIR")


@dataclass(frozen=True)
class ConvOptions(CommandOptions):
    """``cnnlab explain conv`` / ``cnnlab.explain.conv``."""

    image: str | None = option(None, "an image file to filter instead of the lesson's", metavar="IMG")
    filters: str | None = option(
        None,
        "comma-separated from vertical, horizontal, sobel-v, sobel-h, laplacian, blur, sharpen "
        "(default: vertical,horizontal, the lesson's)",
        metavar="LIST",
    )
    out: str = lesson_out_option()


@dataclass(frozen=True)
class PoolOptions(CommandOptions):
    """``cnnlab explain pool`` / ``cnnlab.explain.pool``."""

    image: str | None = option(None, "an image file to pool instead of the lesson's map", metavar="IMG")
    # 2 at least: a 1x1 window changes nothing.
    size: int = option(2, "window side and stride", at_least=2, metavar="N")
    out: str = lesson_out_option()


@dataclass(frozen=True)
class FiguresOptions(CommandOptions):
    """``cnnlab explain filters`` and ``receptive-field``: where the figures go."""

    out: str | None = run_out_option()


@dataclass(frozen=True)
class FeatureMapsOptions(CommandOptions):
    """``cnnlab explain feature-maps`` / ``cnnlab.explain.feature_maps``."""

    layers: tuple[str, ...] = option(
        (),
        "a layer to show (repeat for more; default: a few stages spread from early to late)",
        flag="--layer",
        metavar="NAME",
    )
    out: str | None = run_out_option()


@dataclass(frozen=True)
class GradcamOptions(CommandOptions):
    """``cnnlab explain gradcam`` / ``cnnlab.explain.gradcam``."""

    class_name: str | None = option(
        None, "explain this class instead of each image's predicted one", flag="--class", metavar="NAME"
    )
    method: CamMethod = option(
        "gradcam", "gradcam (default), gradcam++ (several objects), eigencam (no gradient: class-agnostic)"
    )
    layer: str | None = option(None, "the layer to explain (default: the last convolutional stage)", metavar="NAME")
    out: str | None = run_out_option()

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method == "eigencam" and self.class_name is not None:
            raise CnnlabError(
                "--class has no effect with --method eigencam (it maps the layer's main activation "
                "pattern, whatever the class); use gradcam or gradcam++ to explain a class"
            )
