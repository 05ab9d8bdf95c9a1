"""The one exception type that means "the user's input is wrong", the one "did you mean" hint, and the
one way a message counts things ("1 epoch", "3 epochs")."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CnnlabError(Exception):
    """A problem the user can fix: printed as ``cnnlab: error: <message>`` with no traceback.

    The message names the file or option at fault and what to do about it.
    """


def suggest(
    value: str, choices: Iterable[str], otherwise: str = "", cutoff: float = 0.6, n: int = 1, first: Iterable[str] = ()
) -> str:
    """The tail of an error message about a mistyped ``value``: ``"; did you mean X?"``.

    Args:
        value: what the user typed.
        choices: the valid spellings.
        otherwise: said instead (as ``"; <otherwise>"``) when nothing is close; "" says nothing.
        cutoff: how alike a choice must be (difflib ratio) to be offered.
        n: how many close choices to offer at most.
        first: choices offered before the others that are close (e.g. the names with built-in weights).
    """
    close = close_matches(str(value), choices, n, cutoff, first)
    if not close:
        return f"; {otherwise}" if otherwise else ""
    if len(close) == 1 and close[0].lower() == str(value).lower():  # 'Ants' for 'ants': say what differs
        return f"; did you mean {close[0]}? (names are case-sensitive)"
    return f"; did you mean {', '.join(close[:-1]) + ' or ' if len(close) > 1 else ''}{close[-1]}?"


def close_matches(
    value: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6, first: Iterable[str] = ()
) -> list[str]:
    """Up to ``n`` choices close to ``value``: those in ``first``, then those that start with what was
    typed (``efficientnet_lite`` -> ``efficientnet_lite0`` before ``lite4``), then the most alike, ties in
    the order of ``choices``; the case is ignored when no choice is close as typed ("Leson" and "LESSON"
    are close to "lesson")."""
    options = list(dict.fromkeys(str(c) for c in choices))
    close = difflib.get_close_matches(value, options, n=max(n, 20), cutoff=cutoff)
    if not close:
        lowered = {option.lower(): option for option in options}
        close = [
            lowered[c] for c in difflib.get_close_matches(value.lower(), list(lowered), n=max(n, 20), cutoff=cutoff)
        ]
    preferred, typed = set(first), value.lower()
    position = {option: i for i, option in enumerate(options)}  # ties keep the order the choices were given in

    def rank(choice: str) -> tuple[bool, bool, float, int]:
        alike = difflib.SequenceMatcher(None, typed, choice.lower()).ratio()
        return choice not in preferred, not choice.lower().startswith(typed), -alike, position[choice]

    return sorted(close, key=rank)[:n]


def plural(count: int, noun: str, nouns: str = "") -> str:
    """``count`` and the noun it takes: ``plural(1, "epoch")`` is "1 epoch", ``plural(3, "epoch")`` "3 epochs";
    ``nouns`` for a plural other than noun + "s" (``plural(2, "class", "classes")``)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"
