"""Issue #16: one process vs two DDP processes on this machine's CPU, as a user runs them.

    PYTHONPATH=src python bench/bench_ddp_cpu.py --rounds 3        # ~5 min on 2 busy cores

Each round runs ``cnnlab train mnist-sample`` three ways, interleaved: one process (torch's
default threads: one per core), one process with one thread (``OMP_NUM_THREADS=1``), and
``--devices 2 --strategy ddp`` (gloo; Lightning gives each process cores/processes threads: one
here), the same global batch, each a fresh command timed from start to report. Reported: the
median whole-command time, the median epoch time (from the epoch lines) and the test accuracy,
with ratios to the first. The one-thread process separates the effect of two processes from that
of one thread each (on a busy machine, threads of one process wait for each other).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_page  # noqa: E402

TRAIN = ["train", "mnist-sample", "--epochs", "3", "--seed", "0", "--accelerator", "cpu"]
VARIANTS = [  # (label, flags, environment)
    ("1 process, 2 threads", ["--devices", "1"], {}),
    ("1 process, 1 thread", ["--devices", "1"], {"OMP_NUM_THREADS": "1"}),
    ("2 processes (ddp), 1 thread each", ["--devices", "2", "--strategy", "ddp"], {}),
]


def run_once(extra: list[str], env: dict[str, str], runs: Path) -> dict[str, float]:
    """One whole command: wall seconds, median epoch seconds, test accuracy."""
    started = time.perf_counter()
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", *TRAIN, *extra, "--verbose", "--runs-dir", str(runs)],
        capture_output=True,
        text=True,
        env={**environment, "CI": "1", **env},
        timeout=1800,
    )
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    epochs = [float(s) for s in re.findall(r"^epoch \d+/\d+ .*\((\d+\.\d+)s\)$", result.stdout, re.M)]
    accuracy = float(re.search(r"test accuracy (\d+\.\d+)%", result.stdout).group(1))
    return {"seconds": seconds, "epoch": statistics.median(epochs), "accuracy": accuracy}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    found: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, extra, env in VARIANTS:
                found[name].append(run_once(extra, env, Path(tmp) / "runs"))
                print(f"round {round_ + 1}: {name}: {found[name][-1]}", flush=True)
    med = {
        name: {k: statistics.median(r[k] for r in rows) for k in ("seconds", "epoch", "accuracy")}
        for name, rows in found.items()
    }
    one = med[VARIANTS[0][0]]
    body = [
        "| run | whole command (median s) | epoch (median s) | test accuracy (median) | command ratio | epoch ratio |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in med.items():
        body.append(
            f"| {name} | {m['seconds']:.1f} | {m['epoch']:.2f} | {m['accuracy']:.2f}% | "
            f"{m['seconds'] / one['seconds']:.2f} | {m['epoch'] / one['epoch']:.2f} |"
        )
    command = f"PYTHONPATH=src python bench/bench_ddp_cpu.py --rounds {args.rounds}"
    intro = (
        f"`cnnlab {' '.join(TRAIN)}` as one process (default threads, then `OMP_NUM_THREADS=1`) and as "
        f"`--devices 2 --strategy ddp`, interleaved, {args.rounds} rounds, global batch 128 in all. Ratios are "
        "to the first row."
    )
    write_page("ddp_cpu", "One process vs two DDP processes on a 2-core CPU", command, intro, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
