"""The ``cnnlab`` command: parses, builds a config, calls one library function per command."""

from __future__ import annotations

import logging
import os
import sys

from cnnlab.cli import (
    augment_cmd,
    data_cmd,
    evaluate_cmd,
    experiment_cmd,
    info_cmd,
    models_cmd,
    recipes_cmd,
    report_cmd,
    train_cmd,
)
from cnnlab.cli.parser import Parser
from cnnlab.errors import CnnlabError


def build_parser() -> Parser:
    parser = Parser(
        prog="cnnlab",
        description="Train, evaluate, explain and shrink CNN image classifiers.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train_cmd.add_parser(commands)
    evaluate_cmd.add_parser(commands)
    report_cmd.add_parser(commands)
    report_cmd.add_runs_parser(commands)
    data_cmd.add_parser(commands)
    augment_cmd.add_parser(commands)
    experiment_cmd.add_parser(commands)
    models_cmd.add_parser(commands)
    recipes_cmd.add_parser(commands)
    info_cmd.add_parser(commands)
    return parser


def _setup_logging() -> None:
    """cnnlab's own messages as plain ``warning: ...`` lines on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger = logging.getLogger("cnnlab")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logging.addLevelName(logging.WARNING, "warning")
    logging.addLevelName(logging.INFO, "info")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for a user error, 130 for Ctrl-C)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the sub-command's parser, so the hint is in its terms
        parser.subcommand(args.command).error(f"unrecognized arguments: {' '.join(extras)}")
    _setup_logging()
    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ncnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
