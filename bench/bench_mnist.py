"""MNIST from scratch: time to 99.0% and 99.5% test accuracy, ``--recipe fast`` vs ``--recipe lesson``.

    PYTHONPATH=src python bench/bench_mnist.py                 # 3 seeds each, about 15-25 min
    PYTHONPATH=src python bench/bench_mnist.py --seeds 1 --lesson-epochs 3   # a quick look
    PYTHONPATH=src python bench/bench_mnist.py --speed         # step time per speed-up, ~3 min

Full MNIST (60,000 training, 10,000 test images, from ../shared/data). Both recipes train through
cnnlab's real path (Lightning Trainer + ClassifierModule, validation and checkpoints each epoch);
a callback scores the test split ``--probes`` times per epoch, off the clock. Runs interleave
(lesson seed 0, fast seed 0, lesson seed 1, ...) so both see the same machine load; the figure is
the per-seed ratio of the lesson's time to 99.0% over fast's. The lesson run is capped at
``--lesson-epochs`` (it reaches 99.0% after about 7) and stops once it reaches 99.0%, to fit
three seeds in the time. Writes bench/out/mnist.md. ``--speed`` instead times one training step
of simple_cnn and fast_cnn under each speed-up (channels_last, bf16, compile, threads), side by
side, and writes bench/out/speedups_mnist.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import (
    OUT,
    RunResult,
    dataset,
    load_data,
    machine,
    recipe_config,
    speed_table,
    spread,  # noqa: E402
    train_once,
)

GOALS = (0.990, 0.995)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--lesson-epochs", type=int, default=10, help="cap on the lesson recipe's 15 epochs")
    p.add_argument("--lesson-full", action="store_true", help="do not stop the lesson run at 99.0%%")
    p.add_argument("--fast-epochs", type=int, default=None, help="override the fast recipe's epochs")
    p.add_argument("--probes", type=int, default=8, help="test-accuracy probes per epoch")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--speed", action="store_true", help="only the per-step speed-up tables")
    return p.parse_args(argv)


def speed(command: str) -> int:
    """Per-step timing of each speed-up for the lesson's and the fast recipe's networks."""
    parts = [
        "# Training-step speed-ups on this CPU (MNIST-sized networks)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        "",
        "Forward + backward + SGD step on random 28x28x1 batches of 128; variants timed round-robin, 15 rounds.",
        "",
    ]
    for name in ("simple_cnn", "fast_cnn"):
        parts += [f"**{name}**", "", *speed_table(name, 1, 28, 128, rounds=15), ""]
        print("\n".join(parts[-4:]), flush=True)
    OUT.mkdir(exist_ok=True)
    (OUT / "speedups_mnist.md").write_text("\n".join(parts))
    print("\n".join(parts))
    return 0


def row(name: str, runs: list[RunResult]) -> list[str]:
    cells = [name]
    for goal in GOALS:
        hits = [r.probe.first_reaching(goal) for r in runs]
        reached = [h for h in hits if h is not None]
        note = "" if len(reached) == len(runs) else f" [{len(reached)}/{len(runs)} seeds]"
        cells.append(spread([h[0] for h in reached]) + note)
        cells.append(spread([h[1] for h in reached]) + note)
        cells.append(spread([h[2] for h in reached], "{:.2f}") + note)
    cells.append(spread([100 * r.final_acc for r in runs], "{:.2f}"))
    cells.append(spread([max(p[3] for p in r.probe.points) * 100 for r in runs], "{:.2f}"))
    cells.append(spread([r.train_seconds for r in runs]))
    cells.append(spread([r.epochs for r in runs], "{:.2f}"))
    return cells


def speedups(runs: dict[str, list[RunResult]], index: int) -> tuple[list[float], int]:
    """Per-seed lesson/fast ratios of time to 99.0% (index 0: wall, 1: CPU), and how many are bounds."""
    ratios, bounds = [], 0
    for lesson, fast in zip(runs["lesson"], runs["fast"]):
        a, b = lesson.probe.first_reaching(GOALS[0]), fast.probe.first_reaching(GOALS[0])
        if b and not a:  # the lesson never got there: its whole training time is a lower bound
            a, bounds = lesson.probe.points[-1][:3], bounds + 1
        if a and b:
            ratios.append(a[index] / b[index])
    return ratios, bounds


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_mnist.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed:
        return speed(command)
    source = dataset("mnist")
    lesson_cfg = recipe_config("lesson", source, 0, {"train": {"epochs": args.lesson_epochs}})
    fast_cfg = recipe_config("fast", source, 0, {"train": {"epochs": args.fast_epochs}} if args.fast_epochs else None)
    started = time.perf_counter()
    data = {"lesson": load_data(lesson_cfg), "fast": load_data(fast_cfg)}
    print(f"data decoded in {time.perf_counter() - started:.0f}s; {machine()}", flush=True)
    runs: dict[str, list[RunResult]] = {"lesson": [], "fast": []}
    for seed in range(args.seeds):
        for name, base in (("lesson", lesson_cfg), ("fast", fast_cfg)):
            config = recipe_config(name, source, seed, {"train": {"epochs": base.train.epochs}})
            stop = None if (name == "fast" or args.lesson_full) else GOALS[0]
            result = train_once(config, data[name], args.probes, stop_at=stop)
            runs[name].append(result)
            hit = result.probe.first_reaching(GOALS[0])
            print(
                f"{name} seed {seed}: 99.0% at {hit[0] if hit else float('nan'):.1f}s "
                f"(epoch {hit[2] if hit else float('nan'):.2f}), final {result.final_acc:.2%}, "
                f"trained {result.train_seconds:.0f}s; probes: "
                + " ".join(f"{p[2]:.2f}:{p[3]:.4f}" for p in result.probe.points),
                flush=True,
            )
    wall, bounds = speedups(runs, 0)
    cpu, _ = speedups(runs, 1)
    header = [
        "recipe",
        "time to 99.0% (s)",
        "CPU s to 99.0%",
        "epochs to 99.0%",
        "time to 99.5% (s)",
        "CPU s to 99.5%",
        "epochs to 99.5%",
        "final test acc % (best ckpt)",
        "best probe acc %",
        "training time (s)",
        "epochs trained",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row(name, runs[name])) + " |" for name in ("lesson", "fast")]
    bound = f" (lower bounds: the lesson missed 99.0% in {bounds} seeds)" if bounds else ""
    goal_met = bool(wall) and statistics.median(wall) >= 10
    fast_995 = [r.probe.first_reaching(GOALS[1]) for r in runs["fast"]]
    text = "\n".join(
        [
            "# MNIST from scratch: --recipe fast vs --recipe lesson",
            "",
            f"Command: `{command}`  ",
            f"Machine: {machine()}  ",
            f"Seeds: {args.seeds} per recipe, interleaved; median (min-max). Test accuracy probed "
            f"{args.probes}x per epoch, probe time excluded. Lesson capped at {args.lesson_epochs} epochs"
            + ("" if args.lesson_full else " and stopped once it reached 99.0%")
            + ".",
            "",
            *lines,
            "",
            f"**Speed-up to 99.0% (lesson time / fast time, per seed pair): {spread(wall, '{:.1f}')}x wall "
            f"time, {spread(cpu, '{:.1f}')}x CPU time{bound}** (goal: at least 10x wall time: "
            f"{'met' if goal_met else 'not met'}); fast reached 99.5% in "
            f"{sum(h is not None for h in fast_995)}/{len(fast_995)} seeds.",
            "",
        ]
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "mnist.md").write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
