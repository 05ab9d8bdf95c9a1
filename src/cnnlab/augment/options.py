"""The augmentation config: the lesson's Keras ``ImageDataGenerator`` knobs plus modern ones.

Units follow Keras where Keras is clear, and are stated where it is not:

* ``rotation`` is in degrees, like Keras ``rotation_range``: 20 means a uniform angle in [-20, 20].
* ``shear`` is in degrees, like Keras ``shear_range`` since Keras 2.2 (older Keras read the same
  number as radians, which is why old tutorials write ``shear_range=0.15`` and mean about 8.6°).
* ``zoom`` 0.2 means a magnification drawn uniformly from [0.8, 1.2], the same for both axes
  (Keras draws x and y independently, which also stretches the aspect ratio; we do not).
* ``width_shift`` / ``height_shift`` are fractions of the image width / height.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, fields
from typing import Any

from cnnlab.errors import CnnlabError

FILL_MODES = ("nearest", "constant", "reflect", "wrap")
POLICIES = ("randaugment", "trivialaugment")


def flag(name: str) -> str:
    """The command-line flag for a config field, used in every error message."""
    return "--" + name.replace("_", "-")


def suggest(value: str, choices: tuple[str, ...] | list[str]) -> str:
    """A ' (did you mean X?)' hint for a misspelt choice, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class AugmentConfig:
    """Train-time augmentation settings. All ops are off by default."""

    rotation: float = 0.0  # degrees; angle ~ U[-rotation, rotation], counter-clockwise positive
    width_shift: float = 0.0  # fraction of width; shift ~ U[-w, w]
    height_shift: float = 0.0  # fraction of height
    hflip: bool = False  # mirror left-right with probability 0.5
    vflip: bool = False  # mirror top-bottom with probability 0.5
    zoom: float = 0.0  # magnification ~ U[1 - zoom, 1 + zoom]; > 1 zooms in
    shear: float = 0.0  # degrees; shear angle along x ~ U[-shear, shear]
    brightness: tuple[float, float] | None = None  # multiplicative factor ~ U[lo, hi]
    contrast: tuple[float, float] | None = None  # factor ~ U[lo, hi] around the image's grey mean
    fill_mode: str = "nearest"  # what fills pixels moved in from outside: Keras' fill_mode
    random_resized_crop: float | None = None  # lower bound of the crop's area fraction, e.g. 0.08
    policy: str | None = None  # None | 'randaugment' | 'trivialaugment' (torchvision v2)
    random_erasing: float = 0.0  # probability of erasing one random box per image
    mixup: float = 0.0  # Beta(alpha, alpha) for mixup; 0 = off
    cutmix: float = 0.0  # Beta(alpha, alpha) for cutmix; 0 = off
    label_smoothing: float = 0.0  # target mass spread evenly over all classes

    def __post_init__(self) -> None:
        _coerce_and_validate(self)

    @property
    def geometric(self) -> bool:
        """True when any op that moves pixels is on (one affine warp covers them all)."""
        return bool(
            self.rotation or self.width_shift or self.height_shift or self.hflip or self.vflip
            or self.zoom or self.shear or self.random_resized_crop is not None
        )

    @property
    def photometric(self) -> bool:
        """True when brightness or contrast jitter is on."""
        return self.brightness is not None or self.contrast is not None

    @property
    def mixing(self) -> bool:
        """True when the targets must become soft (mixup, cutmix or label smoothing)."""
        return bool(self.mixup or self.cutmix or self.label_smoothing)


def field_names() -> list[str]:
    """Names of all config fields, for close-match suggestions on unknown keys."""
    return [f.name for f in fields(AugmentConfig)]


def _number(name: str, value: Any, lo: float, hi: float, hi_open: bool = False) -> float:
    """Check that ``value`` is a number in [lo, hi] (or [lo, hi)) and return it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise CnnlabError(f"{flag(name)} must be a number, got {value!r}")
    upper_ok = value < hi if hi_open else value <= hi
    if not (lo <= value and upper_ok):
        bound = f"below {hi:g}" if hi_open else f"{hi:g}"
        raise CnnlabError(f"{flag(name)} must be between {lo:g} and {bound}, got {value:g}")
    return float(value)


def _range(name: str, value: Any) -> tuple[float, float] | None:
    """Check a (lo, hi) multiplicative factor range; lists (from YAML) become tuples."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise CnnlabError(f"{flag(name)} takes two numbers LO HI (e.g. 0.8 1.2), got {value!r}")
    lo = _number(name, value[0], 0.0, 10.0)
    hi = _number(name, value[1], 0.0, 10.0)
    if lo > hi:
        raise CnnlabError(f"{flag(name)} needs LO <= HI, got {lo:g} {hi:g}; swap the two numbers")
    return (lo, hi)


def _coerce_and_validate(cfg: AugmentConfig) -> None:
    """Validate every field, raising CnnlabError naming the flag; normalise types in place."""
    set_ = object.__setattr__  # frozen dataclass: the only sanctioned way to normalise in __post_init__
    set_(cfg, "rotation", _number("rotation", cfg.rotation, 0, 180))
    set_(cfg, "width_shift", _number("width_shift", cfg.width_shift, 0, 1, hi_open=True))
    set_(cfg, "height_shift", _number("height_shift", cfg.height_shift, 0, 1, hi_open=True))
    set_(cfg, "zoom", _number("zoom", cfg.zoom, 0, 1, hi_open=True))  # 1 - zoom must stay > 0
    set_(cfg, "shear", _number("shear", cfg.shear, 0, 60))  # tan() explodes towards 90°
    for name in ("hflip", "vflip"):
        if not isinstance(getattr(cfg, name), bool):
            raise CnnlabError(f"{flag(name)} must be true or false, got {getattr(cfg, name)!r}")
    set_(cfg, "brightness", _range("brightness", cfg.brightness))
    set_(cfg, "contrast", _range("contrast", cfg.contrast))
    if cfg.fill_mode not in FILL_MODES:
        raise CnnlabError(
            f"--fill-mode must be one of {', '.join(FILL_MODES)}, got {cfg.fill_mode!r}"
            + suggest(str(cfg.fill_mode), FILL_MODES)
        )
    if cfg.random_resized_crop is not None:
        crop = _number("random_resized_crop", cfg.random_resized_crop, 0, 1)
        if crop <= 0:
            raise CnnlabError(f"--random-resized-crop must be above 0 (e.g. 0.08), got {crop:g}")
        set_(cfg, "random_resized_crop", crop)
    if cfg.policy is not None and cfg.policy not in POLICIES:
        raise CnnlabError(
            f"--policy must be one of {', '.join(POLICIES)} or none, got {cfg.policy!r}"
            + suggest(str(cfg.policy), POLICIES)
        )
    set_(cfg, "random_erasing", _number("random_erasing", cfg.random_erasing, 0, 1))
    set_(cfg, "mixup", _number("mixup", cfg.mixup, 0, 100))
    set_(cfg, "cutmix", _number("cutmix", cfg.cutmix, 0, 100))
    set_(cfg, "label_smoothing", _number("label_smoothing", cfg.label_smoothing, 0, 1, hi_open=True))
