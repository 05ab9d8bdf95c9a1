"""The augmentation options: the lesson's Keras ``ImageDataGenerator`` knobs plus modern ones, and presets.

Units follow Keras where Keras is clear, and are stated where it is not:

* ``rotation`` is in degrees, like Keras ``rotation_range``: 20 means a uniform angle in [-20, 20].
* ``shear`` is in degrees, like Keras ``shear_range`` since Keras 2.2 (older Keras read the same
  number as radians, which is why old tutorials write ``shear_range=0.15`` and mean about 8.6°).
* ``zoom`` 0.2 means a magnification drawn uniformly from [0.8, 1.2], the same for both axes
  (Keras draws x and y independently, which also stretches the aspect ratio; we do not).
* ``width_shift`` / ``height_shift`` are fractions of the image width / height.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from cnnlab.config.schema import check_fields, option, spec_of
from cnnlab.errors import CnnlabError, suggest

FillMode = Literal["nearest", "constant", "reflect", "wrap"]
Policy = Literal["randaugment", "trivialaugment"]
FlipMode = Literal["random", "alternate"]


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation settings. All ops are off by default."""

    rotation: float = option(0.0, "rotate by U[-DEG, DEG] degrees (lesson: 20)", metavar="DEG", at_least=0, at_most=180)
    width_shift: float = option(
        0.0, "shift left/right by up to FRAC of the width (lesson: 0.2)", metavar="FRAC", at_least=0, below=1
    )
    height_shift: float = option(
        0.0, "shift up/down by up to FRAC of the height (lesson: 0.2)", metavar="FRAC", at_least=0, below=1
    )
    translate: int = option(
        0,
        "move by up to N whole pixels each way, --fill-mode filling the edge (no "
        "resampling blur, unlike the shifts; airbench's CIFAR augmentation: 2)",
        metavar="N",
        at_least=0,
        at_most=64,
    )
    hflip: bool = option(False, "mirror left-right with probability 0.5")
    vflip: bool = option(False, "mirror top-bottom with probability 0.5")
    flip_mode: FlipMode = option(
        "random",
        "which images --hflip mirrors: random (a coin per image each time) or alternate (a seeded half "
        "in the first epoch, then each image on every other epoch: airbench's alternating flip)",
    )
    # 1 - zoom must stay above 0
    zoom: float = option(0.0, "zoom by a factor in [1-Z, 1+Z] (lesson: 0.2)", metavar="Z", at_least=0, below=1)
    # tan() explodes towards 90°
    shear: float = option(
        0.0,
        "shear by U[-DEG, DEG] degrees (Keras' unit; the lesson's 0.15 rad = 8.6)",
        metavar="DEG",
        at_least=0,
        at_most=60,
    )
    brightness: tuple[float, float] | None = option(
        None, "multiply brightness by U[LO, HI] (e.g. 0.8 1.2)", at_least=0, at_most=10
    )
    contrast: tuple[float, float] | None = option(
        None, "scale contrast around the grey mean by U[LO, HI] (e.g. 0.8 1.2)", at_least=0, at_most=10
    )
    fill_mode: FillMode = option("nearest", "what fills pixels moved in from outside (Keras' fill_mode)")
    random_resized_crop: float | None = option(
        None,
        "crop a random box of area in [SCALE, 1] and resize it back (e.g. 0.08)",
        metavar="SCALE",
        above=0,
        at_most=1,
    )
    policy: Policy | None = option(None, "automatic augmentation policy (torchvision v2)")
    random_erasing: float = option(
        0.0, "erase one random box per image with probability P", metavar="P", at_least=0, at_most=1
    )
    mixup: float = option(
        0.0, "mixup with lambda ~ Beta(ALPHA, ALPHA); 0 = off (e.g. 0.2)", metavar="ALPHA", at_least=0, at_most=100
    )
    cutmix: float = option(
        0.0, "CutMix with lambda ~ Beta(ALPHA, ALPHA); 0 = off (e.g. 1.0)", metavar="ALPHA", at_least=0, at_most=100
    )
    label_smoothing: float = option(
        0.0, "spread S of each target over all classes (e.g. 0.1)", metavar="S", at_least=0, below=1
    )

    def __post_init__(self) -> None:
        check_fields(self, "augment")
        for name in ("brightness", "contrast"):
            pair = getattr(self, name)
            if pair is not None and pair[0] > pair[1]:
                flag = spec_of(AugmentConfig, "augment", name).flag
                raise CnnlabError(f"{flag} needs LO <= HI, got {pair[0]:g} {pair[1]:g}; swap the two numbers")
        if self.flip_mode == "alternate" and not self.hflip:
            raise CnnlabError("--flip-mode alternate chooses which images --hflip mirrors: add --hflip")

    @property
    def geometric(self) -> bool:
        """True when any op that moves pixels is on (one affine warp covers them all)."""
        return bool(
            self.rotation
            or self.width_shift
            or self.height_shift
            or self.hflip
            or self.vflip
            or self.zoom
            or self.shear
            or self.random_resized_crop is not None
        )

    @property
    def photometric(self) -> bool:
        """True when brightness or contrast jitter is on."""
        return self.brightness is not None or self.contrast is not None

    @property
    def mixing(self) -> bool:
        """True when the targets must become soft (mixup, cutmix or label smoothing)."""
        return bool(self.mixup or self.cutmix or self.label_smoothing)


MIXING_FIELDS = ("mixup", "cutmix", "label_smoothing")  # need labels: not in an image preview

# The lesson's ImageDataGenerator settings: rotation_range=20, width/height_shift_range=0.2,
# horizontal_flip=True, zoom_range=0.2, fill_mode='nearest'.
_LESSON: dict[str, Any] = {
    "rotation": 20.0,
    "width_shift": 0.2,
    "height_shift": 0.2,
    "hflip": True,
    "zoom": 0.2,
    "fill_mode": "nearest",
}

# Presets are data: name -> field overrides on top of AugmentConfig's all-off defaults.
PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    "light": {"hflip": True, "width_shift": 0.1, "height_shift": 0.1},
    "lesson": dict(_LESSON),
    # The lesson's production pipeline adds shear_range=0.15 and brightness_range=[0.8, 1.2].
    # 0.15 was written for Keras' old radian reading of shear_range; 0.15 rad = 8.6°. Taken in
    # today's Keras unit (degrees) it would be an invisible 0.15°, so we keep the lesson's intent.
    "production": {**_LESSON, "shear": round(math.degrees(0.15), 1), "brightness": (0.8, 1.2)},
    # TrivialAugmentWide has no knobs to tune and beats RandAugment on CIFAR in its paper;
    # random erasing at timm's default probability 0.25.
    "strong": {**_LESSON, "policy": "trivialaugment", "random_erasing": 0.25},
}


def resolve_augment(preset: str = "none", **overrides: Any) -> AugmentConfig:
    """A config from a preset name plus field overrides (None values keep the preset's).

    Raises:
        CnnlabError: Unknown preset or field, or a value out of range.
    """
    if preset not in PRESETS:
        raise CnnlabError(f"--augment must be one of {', '.join(PRESETS)}, got {preset!r}{suggest(preset, PRESETS)}")
    known = [f.name for f in fields(AugmentConfig)]
    for key in overrides:
        if key not in known:
            raise CnnlabError(f"unknown augment option {key!r}{suggest(key, known)}")
    chosen = {k: v for k, v in overrides.items() if v is not None}
    return replace(AugmentConfig(), **{**PRESETS[preset], **chosen})
