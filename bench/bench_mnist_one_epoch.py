"""MNIST in one epoch: ``cnnlab train MNIST --recipe fast`` (one pass over the training digits), 5 seeds.

Each seed is one whole ``cnnlab train`` process, the command a user types (plus ``--seed``), on
the warm decoded-image cache; test accuracy comes from the run folder's metrics.json, the
epoch's time from its run.json (the training stage's seconds: one epoch, its validation and
checkpoint included). Accuracy after one epoch does not depend on the machine's load; the time
does, so the page gives the load average (``uptime``) before and after.

    PYTHONPATH=src python bench/bench_mnist_one_epoch.py [--seeds 5] [-- extra cnnlab train flags]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_mnist_whole import run_cnnlab
from common import dataset, spread, write_page

from cnnlab.data.decoded_cache import cache_root

GOAL = 0.990


def load_average() -> str:
    """The 1, 5 and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def one_seed(mnist: Path, work: Path, seed: int, extra: list[str]) -> dict:
    """One whole run; its test accuracy, epochs trained and training-stage seconds."""
    run = run_cnnlab(mnist, work, f"seed{seed}", cache_root(), ["--seed", str(seed), *extra])
    stages = run["meta"].get("stages", [])
    run["epochs"] = sum(stage.get("epochs", 0) for stage in stages)
    run["train_seconds"] = sum(stage.get("seconds", 0.0) for stage in stages)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    parser.add_argument("extra", nargs="*", help="more cnnlab train flags (after --)")
    args = parser.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_mnist_one_epoch.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    mnist = dataset("mnist")
    load_before = load_average()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            runs.append(one_seed(mnist, Path(tmp), seed, args.extra))
            print(
                f"seed {seed}: {runs[-1]['accuracy']:.2%} test after {runs[-1]['epochs']} epoch(s), "
                f"training {runs[-1]['train_seconds']:.1f} s",
                flush=True,
            )
    accuracies = [100 * r["accuracy"] for r in runs]
    reached = sum(r["accuracy"] >= GOAL for r in runs)
    rows = ["| seed | test accuracy | epochs | training stage (s) | whole command (s) |", "|---|---|---|---|---|"]
    rows += [
        f"| {seed} | {r['accuracy']:.2%} | {r['epochs']} | {r['train_seconds']:.1f} | {r['wall']:.1f} |"
        for seed, r in enumerate(runs)
    ]
    summary = (
        f"**Test accuracy after one epoch: min {min(accuracies):.2f}%, median "
        f"{statistics.median(accuracies):.2f}%, max {max(accuracies):.2f}%** ({reached}/{len(runs)} seeds at "
        f"99.0% or more). Training stage (one epoch with its validation): "
        f"{spread([r['train_seconds'] for r in runs])} s, median (min-max)."
    )
    load = (
        f"Load average (1, 5, 15 min) before: {load_before}; after: {load_average()}. The times are this "
        "machine's at that load, not a quiet machine's; the accuracies do not depend on it."
    )
    body = [summary, "", *rows, "", load]
    write_page(
        "mnist_one_epoch",
        "MNIST in one epoch: --recipe fast",
        command,
        "`cnnlab train MNIST --recipe fast --seed S` as whole processes, one per seed, warm cache; "
        "test accuracy on MNIST's 10,000 test digits after the recipe's one epoch.",
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
