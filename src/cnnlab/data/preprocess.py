"""The input format, end to end: what a model asks of its images, and what a run settled on.

Two shapes, one per moment:

- ``ModelInput``: the model's request before any data exists (from its pretrained config; every
  field may be None: "whatever the data has"). ``prepare_data`` decodes images to it.
- ``Preprocess``: the format a run trained on, every field known: run.json's ``"preprocess"``,
  and what ``evaluate``, ``predict``, ``export`` and ``serve`` reproduce from the run folder alone.
  An exported model carries the same dict (``to_json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast, get_args

from cnnlab.config.sections import Channels, CropMode
from cnnlab.data.crop import NO_MARGIN, stored_side
from cnnlab.data.decode import Fit
from cnnlab.errors import CnnlabError

RESIZE = "shorter side to size, then center crop"  # how files are fitted to the stored square (data.decode)
# run.json's "resize": the words for each --crop-mode (center's are the ones runs have always recorded)
RESIZES: dict[str, str] = {
    "center": RESIZE,
    "squash": "whole image resized to size (aspect not kept)",
    "border": "longer side to size, padded with the mean",
}
# the same, in the few words the console and the report put beside the stored side
FITTED: dict[str, str] = {"center": "shorter side", "squash": "whole photo squashed", "border": "whole photo padded"}
_KNOWN = ("image_size", "channels", "mean", "std", "interpolation", "resize", "crop_pct", "crop_mode")


@dataclass(frozen=True)
class ModelInput:
    """How a model wants its images, before it is built: from its pretrained config, never hard-coded.

    None means "the data's own": own CNNs adapt to any channels and size and have no mean/std.
    """

    channels: Channels | None = None  # None: whatever the data has (own CNNs adapt)
    image_size: int | None = None  # None: the data's own size
    crop_pct: float | None = None  # the centre share of the stored image its evaluation sees (timm's)
    mean: tuple[float, ...] | None = None  # None: plain 0-1 rescale, the lesson's 1/255
    std: tuple[float, ...] | None = None
    interpolation: str = "bilinear"


@dataclass(frozen=True)
class Preprocess:
    """How images must look to a trained model: run.json's ``"preprocess"``.

    ``image_size`` is kept as written (a side, or [height, width] for a non-square input), so a
    run.json read and written again is unchanged. ``extra``: keys this version does not know,
    written back as they were.
    """

    image_size: int | tuple[int, int]
    channels: Channels  # 1 or 3
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    resize: str = RESIZE
    # stored at floor(image_size / crop_pct), the model sees the centre crop (cnnlab.data.crop);
    # runs saved before it was recorded stored the model's input itself (NO_MARGIN)
    crop_pct: float = NO_MARGIN
    # how each file became the stored square (--crop-mode); runs saved before it was recorded: center
    crop_mode: CropMode = "center"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the model's input."""
        size = self.image_size
        return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))

    @property
    def side(self) -> int:
        """The side of the model's input (the height of a [height, width] pair)."""
        return self.size[0]

    @property
    def has_margin(self) -> bool:
        """Images are stored larger than the input, and the model sees their centre crop."""
        return self.crop_pct < NO_MARGIN

    @property
    def stored_side(self) -> int:
        """The side image files are decoded to for this model: its input side plus the stored margin."""
        return stored_side(self.side, self.crop_pct)

    @property
    def fit(self) -> Fit:
        """How image files are made the stored square for this model: its crop mode, padded with its mean."""
        return Fit.of(self.crop_mode, self.mean)

    def request(self) -> ModelInput:
        """The same format as a request to ``prepare_data`` (new data for a trained model)."""
        return ModelInput(self.channels, self.side, self.crop_pct, self.mean, self.std, self.interpolation)

    @classmethod
    def from_json(cls, raw: Any, where: str = "run.json") -> Preprocess:
        """The format of a run.json or an exported model's metadata, older ones included.

        Missing ``crop_pct`` is 1 (no margin: runs before it existed), missing ``crop_mode`` is
        ``center``; ``interpolation`` and ``resize`` take their defaults. ``image_size`` may be a side
        or [height, width].

        Raises:
            CnnlabError: when ``channels``, ``image_size``, ``mean`` or ``std`` is missing or malformed.
        """
        if not isinstance(raw, Mapping):
            raise CnnlabError(f"{where} has no 'preprocess' record; export or train the run again")
        try:
            size = raw["image_size"]
            image_size: int | tuple[int, int] = int(size) if isinstance(size, (int, float)) else _pair(size)
            return cls(
                image_size=image_size,
                channels=_channels(raw["channels"]),
                mean=tuple(raw["mean"]),
                std=tuple(raw["std"]),
                interpolation=str(raw.get("interpolation", "bilinear")),
                resize=str(raw.get("resize", RESIZE)),
                crop_pct=float(raw.get("crop_pct", NO_MARGIN)),
                crop_mode=_crop_mode(raw.get("crop_mode", "center")),
                extra={k: v for k, v in raw.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CnnlabError(
                f"{where}: its 'preprocess' record is incomplete ({type(exc).__name__}: {exc}); "
                "restore the file or train again"
            ) from None

    def to_json(self) -> dict[str, Any]:
        """run.json's ``"preprocess"`` dict (the keys and order cnnlab has always written)."""
        size = self.image_size
        return {
            "image_size": size if isinstance(size, int) else list(size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "resize": self.resize,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
            **self.extra,
        }


def _channels(value: Any) -> Channels:
    if int(value) not in get_args(Channels):
        raise ValueError(f"channels {value!r}, not 1 or 3")
    return cast(Channels, int(value))


def _crop_mode(value: Any) -> CropMode:
    if value not in get_args(CropMode):
        raise ValueError(f"crop_mode {value!r}, not one of {', '.join(get_args(CropMode))}")
    return cast(CropMode, value)


def _pair(size: Sequence[Any]) -> tuple[int, int]:
    height, width = size  # ValueError/TypeError unless exactly two
    return int(height), int(width)
