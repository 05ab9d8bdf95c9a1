"""Distillation a user can trust (#29): a pruned copy of a transfer-trained teacher, distilled, against
the same pruned copy trained alone.

    PYTHONPATH=src python bench/bench_distill.py --teacher RUN              # about an hour on the shared 2-core box
    PYTHONPATH=src python bench/bench_distill.py --teacher RUN -- --epochs 4 --batch-size 32   # more distill options

``RUN`` is a transfer-trained run (e.g. EfficientNet-Lite0 on dtd10 with the default ``cnnlab train
DATA --model efficientnet_lite0 --pretrained``); it is copied first, since ``distill`` writes the
pruned copy into ``RUN/pruned/``, and scored with ``cnnlab evaluate`` unless it has been. The whole
``cnnlab distill`` command runs in this process, with the default student (``--student pruned``:
the teacher with half of its channels removed, starting from its weights); the page gives its table
(teacher, student alone, distilled student: parameters, batch-1 latency, test accuracy), the goal
of #29 checked row by row, and the machine's load before and after (the machine is shared:
latencies are measured interleaved, so their ratio is the figure to trust).

Goal: the distilled student answers in at most half the teacher's time, is within 5 points of its
test accuracy, and beats the same student trained alone (same data, options and budget).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_page

from cnnlab.cli.main import main as cnnlab


def load() -> str:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def percent(cell: str) -> float:
    return float(cell.rstrip("%"))


def goal_lines(table: dict) -> list[str]:
    """The three goals of #29 for a distilled student, each with its figures and a yes/no."""
    rows = {row[0]: row for row in table["rows"]}
    teacher, alone, distilled = rows["teacher"], rows["student alone"], rows["distilled student"]
    ratio = float(distilled[4]) / float(teacher[4])
    gap = percent(teacher[6]) - percent(distilled[6])
    gain = percent(distilled[6]) - percent(alone[6])
    return [
        f"- latency: {ratio:.2f}x the teacher's at batch 1 (goal at most 0.5x): {'yes' if ratio <= 0.5 else 'no'}",
        f"- accuracy: {gap:.2f} points below the teacher (goal within 5): {'yes' if gap <= 5 else 'no'}",
        f"- against the same student alone: {gain:+.2f} points (goal above 0): {'yes' if gain > 0 else 'no'}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="a transfer-trained run folder (copied)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/cnnlab-bench-distill"))
    parser.add_argument("--page", default="distill", help="writes bench/out/PAGE.md (default: distill)")
    parser.add_argument("distill_args", nargs="*", help="more cnnlab distill options (after --)")
    args = parser.parse_args()
    teacher = args.workdir / "teacher"
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    shutil.copytree(args.teacher, teacher)
    for path in [teacher, *teacher.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)  # a read-only run copies read-only
    runs = args.workdir / "runs"
    command = ["distill", "--teacher", str(teacher), "--runs-dir", str(runs), "--name", "student", *args.distill_args]
    before, began = load(), time.perf_counter()
    evaluated = (teacher / "metrics.json").is_file()  # scored on its test split already
    if (not evaluated and cnnlab(["evaluate", str(teacher)]) != 0) or cnnlab(command) != 0:
        raise SystemExit("cnnlab failed: see above")
    minutes, after = (time.perf_counter() - began) / 60, load()
    table = json.loads((runs / "student" / "tables" / "distill.json").read_text())
    header = "| " + " | ".join(table["columns"]) + " |\n|" + "---|" * len(table["columns"])
    body = [
        header,
        *("| " + " | ".join(row) + " |" for row in table["rows"]),
        "",
        *(f"- {note}" for note in table["notes"]),
        "",
        "Goals (#29):",
        "",
        *goal_lines(table),
        "",
        (
            f"Load average (1, 5, 15 min) before: {before}; after: {after}; {minutes:.0f} min in all. The machine "
            "was shared with other jobs throughout: the latencies are interleaved, so their ratio holds better "
            "than the milliseconds."
        ),
    ]
    write_page(
        args.page,
        "Distillation: a pruned copy of the teacher, distilled vs alone",
        "cnnlab " + shlex.join(command),
        (
            f"Teacher: a copy of {args.teacher} (`cnnlab evaluate` first). The default student is the "
            "teacher with half of its channels pruned by `cnnlab prune`, starting from its weights; it is "
            "trained once from the teacher (distilled) and once on the labels alone, with the same options "
            "and budget."
        ),
        body,
    )


if __name__ == "__main__":
    main()
