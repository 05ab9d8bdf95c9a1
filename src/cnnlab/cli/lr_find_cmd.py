"""``cnnlab lr-find``: the learning-rate finder on what ``cnnlab train`` with the same options would train."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnlab.cli.parser import number_at_least
from cnnlab.cli.train_cmd import add_run_arguments, config_from_args
from cnnlab.errors import CnnlabError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "lr-find",
        help="the learning-rate finder: loss vs rate, and a rate to train at",
        description="Runs Lightning's learning-rate range test on the data, augmentation, model and first stage "
        "that cnnlab train with the same options would train (for --pretrained: stage 1, the head on cached "
        "features, whose rate --lr sets). Writes lr_find.png (loss vs rate, log scale, the pick marked) and "
        "lr_find.json; prints the pick and the rule. cnnlab train DATA --lr auto does the same, then trains.",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="where lr_find.png and lr_find.json go (default: lr-find/<model>-<data>, numbered when taken)",
    )
    p.add_argument("--steps", type=int, default=None, help="rates to try, one training batch each (default: 100)")
    rate = number_at_least(0, strict=True)
    p.add_argument("--start-lr", type=rate, default=None, metavar="X", help="the first rate (default: 1e-6)")
    p.add_argument("--end-lr", type=rate, default=None, metavar="X", help="the last rate (default: 1)")
    add_run_arguments(p, data_nargs=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.api import lr_find

    if args.steps is not None and args.steps < 5:
        raise CnnlabError(
            f"--steps must be at least 5 (the pick skips the first 10 rates of its curve), got {args.steps}"
        )
    config = config_from_args(args)
    finding = lr_find(
        config=None, out=args.out, steps=args.steps, start_lr=args.start_lr, end_lr=args.end_lr, settings=config
    )
    print(f"\npick: --lr {finding.lr:.3g}")
    print(f"rule: {finding.rule}")
    if finding.folder is not None:
        print(f"plot: {finding.folder / 'lr_find.png'}")
    print(
        f"train at it: cnnlab train {config.data.source} --lr {finding.lr:.3g} (or --lr auto to find it as it trains)"
    )
    return 0
