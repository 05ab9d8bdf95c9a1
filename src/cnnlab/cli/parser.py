"""An ArgumentParser whose errors are one line with a close-match hint, exit code 2."""

from __future__ import annotations

import argparse
import difflib
import sys
from typing import NoReturn


class Parser(argparse.ArgumentParser):
    """argparse, but ``cnnlab train: error: unknown option --epoch; did you mean --epochs?``."""

    def __init__(self, *args, **kwargs) -> None:
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

    def subcommand(self, name: str) -> "Parser":
        """The parser of sub-command ``name`` (for errors worded in its terms)."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return self

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            unknown = message.split(":", 1)[1].split()
            flags = self.all_flags()
            first = next((u for u in unknown if u.startswith("-")), unknown[0])
            close = difflib.get_close_matches(first.split("=")[0], flags, n=1)
            if first.startswith("-"):
                message = f"unknown option {first}"
            else:
                message = f"unexpected argument '{first}'"
            message += f"; did you mean {close[0]}?" if close else f"; see '{self.prog} --help'"
        elif message.startswith("invalid choice:") or message.startswith("argument"):
            message = message.replace("\n", " ")
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value
