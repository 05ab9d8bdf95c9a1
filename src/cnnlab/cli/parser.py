"""An ArgumentParser whose errors are one line with a close-match hint, exit code 2."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from cnnlab.errors import suggest

_INVALID_CHOICE = re.compile(
    r"argument (?P<arg>[^:]+): invalid choice: '(?P<value>[^']*)' "
    r"\(choose from (?P<choices>.*)\)"
)


class Parser(argparse.ArgumentParser):
    """argparse, but ``cnnlab train: error: unknown option --epoch; did you mean --epochs?``.

    A mistyped option, command or choice all get the same hint.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)  # --epoch must not silently mean --epochs
        super().__init__(*args, **kwargs)

    def all_flags(self) -> list[str]:
        """Long options of this parser and of every sub-command below it."""
        flags = [s for s in self._option_string_actions if s.startswith("--")]
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    flags += sub.all_flags() if isinstance(sub, Parser) else []
        return flags

    def subcommand(self, names: list[str]) -> Parser:
        """The parser of the sub-command path ``names`` (for errors worded in its terms)."""
        parser = self
        for name in names:
            for action in parser._actions:
                if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                    parser = action.choices[name]
                    break
        return parser

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            first = next((u for u in unknown if u.startswith("-")), unknown[0])
            if first.startswith("-"):
                message = f"unknown option {first}" + suggest(
                    first.split("=")[0], self.all_flags(), f"see '{self.prog} --help'"
                )
            else:
                message = f"unexpected argument '{first}'; see '{self.prog} --help'"
        else:
            found = _INVALID_CHOICE.match(message.replace("\n", " "))
            if found:
                choices = [c.strip(" '") for c in found["choices"].split(",")]
                what = "command" if found["arg"] in ("COMMAND", "ACTION") else found["arg"]
                message = f"unknown {what} '{found['value']}'" + suggest(
                    found["value"], choices, f"choose from {', '.join(choices)}"
                )
            else:
                message = message.replace("\n", " ")
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """argparse type of a command's own count options (not config fields): an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def number_at_least(low: float, strict: bool = False) -> Callable[[str], float]:
    """argparse type of a command's own number options: a float >= ``low`` (> ``low`` when ``strict``)."""

    def check(text: str) -> float:
        value = float(text)
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be {'above' if strict else 'at least'} {low:g}, got {text}")
        return value

    return check


def thread_count(text: str) -> int:
    """argparse type of ``--threads``: 0 (auto, cnnlab's thread policy) or a count to pin."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (auto) or a count of threads, got {value}")
    return value
