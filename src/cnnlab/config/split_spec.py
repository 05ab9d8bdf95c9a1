"""The small language that says how big a held-out split is: ``0.1``, ``500`` or ``last:10000``."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class SplitSpec:
    """How many images to hold out: a fraction of all, a count, or the last N (unshuffled)."""

    kind: str  # "fraction" | "count" | "last"
    value: float

    @classmethod
    def parse(cls, text: str | float | int, option: str) -> "SplitSpec":
        """Parses ``0.1``, ``500`` or ``last:10000``; ``option`` names the flag in errors."""
        raw = str(text).strip()
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
                "or last:N (the last N images, as the lesson's MNIST split)"
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
        return int(self.value)
