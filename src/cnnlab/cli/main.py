"""The ``cnnlab`` command: parses, builds a config, calls one library function per command.

Only argparse and the config schema are imported here; each command imports what it needs
(torch, Lightning, matplotlib) when it runs, so ``cnnlab --help`` answers at once.
"""

from __future__ import annotations

import logging
import os
import sys

from cnnlab.cli import (
    augment_cmd,
    compare_cmd,
    data_cmd,
    deploy_cmd,
    evaluate_cmd,
    experiment_cmd,
    explain_cmd,
    info_cmd,
    lr_find_cmd,
    models_cmd,
    recipes_cmd,
    report_cmd,
    serve_cmd,
    train_cmd,
    tune_cmd,
)
from cnnlab.cli.parser import Parser
from cnnlab.cli.startup import exit_without_collecting
from cnnlab.errors import CnnlabError
from cnnlab.threads import look_early
from cnnlab.version import __version__

# The sub-command layers below ``command``: their dests, for errors worded in the right terms.
NESTED_COMMANDS = (
    "data_command",
    "augment_command",
    "runs_command",
    "models_command",
    "recipes_command",
    "experiment",
    "explain_command",
)


def build_parser() -> Parser:
    parser = Parser(prog="cnnlab", description="Train, evaluate, explain and shrink CNN image classifiers.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    train_cmd.add_parser(commands)
    lr_find_cmd.add_parser(commands)
    tune_cmd.add_parser(commands)
    evaluate_cmd.add_parser(commands)
    deploy_cmd.add_parser(commands)
    report_cmd.add_parser(commands)
    report_cmd.add_runs_parser(commands)
    explain_cmd.add_parser(commands)
    serve_cmd.add_parser(commands)
    data_cmd.add_parser(commands)
    augment_cmd.add_parser(commands)
    experiment_cmd.add_parser(commands)
    compare_cmd.add_parser(commands)
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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorBoard may load TensorFlow: no banner
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:  # reported by the sub-command's parser, so the hint is in its terms
        path = [args.command] + [getattr(args, d) for d in NESTED_COMMANDS if getattr(args, d, None)]
        parser.subcommand(path).error(f"unrecognized arguments: {' '.join(extras)}")
    _setup_logging()
    exit_without_collecting()
    look_early()  # the first look at the load, while the command imports what it needs
    # With several processes (cnnlab.training.distributed) rank 0 speaks for the run; another rank
    # reports only its own errors, and ends quietly with 0 when rank 0 stopped the run (a non-zero
    # code would make Lightning's launcher kill rank 0 while it is still writing its report).
    from cnnlab.training.distributed import process_rank, rank_message
    from cnnlab.training.ranks import StoppedElsewhere

    try:
        return int(args.func(args) or 0)
    except CnnlabError as exc:
        rank = process_rank()
        if rank == 0:
            print(f"cnnlab {args.command}: error: {exc}", file=sys.stderr)
        elif not isinstance(exc, StoppedElsewhere):
            print(rank_message(exc, rank), file=sys.stderr)
        return 2 if rank == 0 or not isinstance(exc, StoppedElsewhere) else 0
    except KeyboardInterrupt:
        if process_rank() != 0:
            return 0
        print("\ncnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of the output is gone (`cnnlab ... | head`): end as a process stopped by SIGPIPE
        # would (exit 141), without a traceback. stdout goes to /dev/null first, so that the
        # interpreter's last flush of what is still buffered does not fail again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"cnnlab {args.command}: output closed (broken pipe): stopped", file=sys.stderr)
        return 141


if __name__ == "__main__":
    sys.exit(main())
