"""The small language that says how big a held-out split is: ``0.1``, ``500``, ``last:10000`` or ``auto``.

``auto`` (the validation default) is 10% of the images, but at least 100 of them up to a quarter
of the set: 10% of a few hundred photos is a few dozen, where one image moves accuracy by 2-4
points, too few to pick the best epoch or to tell whether fine-tuning helped (issue #20). Sets of
1,000 images and more get their 10% as before: on dtd10 (960 photos) a 200-image split cost
stage 1 1.3 points of test accuracy (760 training photos instead of 864) and its validation loss
then kept the stage-1 model, where 96 chose fine-tuning's +2.1 points.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import CnnlabError

AUTO_FRACTION = 0.1
AUTO_FLOOR = 100  # images, so one image is one point of validation accuracy
AUTO_CAP = 0.25  # ... but never more than this share of a small set


@dataclass(frozen=True)
class SplitSpec:
    """How many images to hold out: a fraction of all, a count, or the last N (unshuffled)."""

    kind: str  # "fraction" | "count" | "last" | "auto"
    value: float

    @classmethod
    def parse(cls, text: str | float | int, option: str) -> SplitSpec:
        """Parses ``0.1``, ``500`` or ``last:10000``; ``option`` names the flag in errors."""
        raw = str(text).strip()
        if raw == "auto":
            return cls("auto", AUTO_FRACTION)
        try:
            if raw.startswith("last:"):
                count = int(raw.split(":", 1)[1])
                if count < 1:
                    raise ValueError
                return cls("last", count)
            number = float(raw)
        except ValueError:
            raise CnnlabError(
                f"{option} '{raw}' is not a split size; use a fraction (0.1), a count (500) "
                "last:N (the last N images, as the lesson's MNIST split) or auto"
            ) from None
        if 0 <= number < 1:
            return cls("fraction", number)
        if number >= 1 and number.is_integer():
            return cls("count", int(number))
        raise CnnlabError(f"{option} '{raw}' must be a fraction in [0, 1) or a whole count")

    def size(self, total: int) -> int:
        """Number of images this spec takes out of ``total``."""
        if self.kind == "fraction":
            return int(round(self.value * total))
        if self.kind == "auto":
            return max(int(round(self.value * total)), min(AUTO_FLOOR, int(round(AUTO_CAP * total))))
        return int(self.value)
