"""The one exception type that means "the user's input is wrong", and the one "did you mean" hint."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """A problem the user can fix: printed as ``cnnlab: error: <message>`` with no traceback.

    The message names the file or option at fault and what to do about it.
    """


def suggest(value: str, choices: Iterable[str], otherwise: str = "", cutoff: float = 0.6) -> str:
    """The tail of an error message about a mistyped ``value``: ``"; did you mean X?"``.

    Args:
        value: what the user typed.
        choices: the valid spellings.
        otherwise: said instead (as ``"; <otherwise>"``) when nothing is close; "" says nothing.
        cutoff: how alike a choice must be (difflib ratio) to be offered.
    """
    options = list(dict.fromkeys(str(c) for c in choices))
    close = difflib.get_close_matches(str(value), options, n=1, cutoff=cutoff)
    if not close:  # "Leson" and "LESSON" are close to "lesson" too
        lowered = {option.lower(): option for option in options}
        close = [lowered[c] for c in difflib.get_close_matches(str(value).lower(), list(lowered), n=1, cutoff=cutoff)]
    if close:
        return f"; did you mean {close[0]}?"
    return f"; {otherwise}" if otherwise else ""
