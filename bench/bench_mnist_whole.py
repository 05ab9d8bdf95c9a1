"""MNIST as users live it: ``cnnlab train MNIST --recipe fast`` as a whole process, against the lesson's Keras.

Side by side in one run on this machine:

* cnnlab, cold: a fresh decoded-image cache (first run on a folder), from process start to exit
  (report written), test accuracy from the run folder, and the phases the run records;
* cnnlab, warm: the same command again (the folder's decoded images are cached);
* the lesson's Keras pipeline (``bench/keras_lesson.py``, TensorFlow in a throwaway virtual
  environment made here), timed to 99.0% test accuracy from its first epoch (favourable to Keras).

* with ``--against SRC``: the warm command again on another checkout's source tree (e.g. the code
  before a change: ``git worktree add /tmp/before HEAD~3``, then ``--against /tmp/before/src``),
  in the same rounds, so the two are compared side by side on the same machine and load.

    python bench/bench_mnist_whole.py [--rounds 2] [--threads N] [--against SRC]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATASETS, HERE, dataset, write_page

from cnnlab.phases import phase_line

KERAS_VENV = DATASETS.parent / "bench" / "keras-venv"
KERAS_PACKAGES = ["tensorflow-cpu==2.21.0", "pillow", "numpy"]


def keras_python() -> Path:
    """The throwaway environment's Python, made on first use (TensorFlow is not a cnnlab dependency)."""
    python = KERAS_VENV / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KERAS_PACKAGES], check=True)
    return python


def source_label(src: Path) -> str:
    """A checkout's short commit (its folder if it is not a git checkout)."""
    found = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return found.stdout.strip() if found.returncode == 0 else str(src)


def run_keras(mnist: Path, out: Path) -> dict:
    """The lesson's Keras run, stopped once it reaches 99.0% test accuracy (what the ratio needs)."""
    subprocess.run([str(keras_python()), str(HERE / "keras_lesson.py"), str(mnist), str(out), "0.99"], check=True)
    return json.loads(out.read_text())


def run_cnnlab(
    mnist: Path, work: Path, name: str, cache: Path, extra: list[str], recipe: str = "fast", src: Path | None = None
) -> dict:
    """One whole ``cnnlab train`` process; its wall time, test accuracy and recorded phases.

    ``src``: run the cnnlab source tree there (e.g. main's, side by side) instead of this one's.
    """
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(cache)}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [
        str(Path(sys.executable).parent / "cnnlab"),
        "train",
        str(mnist),
        "--recipe",
        recipe,
        "--runs-dir",
        str(work),
        "--name",
        name,
        *extra,
    ]
    started = time.perf_counter()
    # Read line by line: when the last line came, to time how long the process lingers after it.
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output, last_line = [], started
    for line in process.stdout:
        output.append(line)
        last_line = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    wall = ended - started
    if process.returncode != 0:
        raise SystemExit(f"cnnlab failed:\n{''.join(output)[-3000:]}")
    meta = json.loads((work / name / "run.json").read_text())
    metrics = json.loads((work / name / "metrics.json").read_text())["test"]
    return {
        "wall": wall,
        "accuracy": metrics["accuracy"],
        "timing": meta.get("timing", {}),
        "meta": meta,
        "stdout": "".join(output),
        "exit_after_last_line": ended - last_line,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="cold+warm cnnlab pairs (default 2)")
    parser.add_argument("--threads", type=int, help="passed to cnnlab as --threads when given")
    parser.add_argument("--against", type=Path, help="another checkout's src/ folder, timed warm in the same rounds")
    args = parser.parse_args(argv)
    command = "python bench/bench_mnist_whole.py " + " ".join(argv if argv is not None else sys.argv[1:])
    mnist = dataset("mnist")
    extra = ["--threads", str(args.threads)] if args.threads else []
    cold, warm, against = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for round_ in range(args.rounds):
            cache = work / f"cache{round_}"
            cold.append(run_cnnlab(mnist, work, f"cold{round_}", cache, extra))
            warm.append(run_cnnlab(mnist, work, f"warm{round_}", cache, extra))
            if args.against:
                against.append(run_cnnlab(mnist, work, f"against{round_}", cache, extra, src=args.against))
            print(
                f"round {round_ + 1}: cold {cold[-1]['wall']:.1f} s ({cold[-1]['accuracy']:.2%}), "
                f"warm {warm[-1]['wall']:.1f} s ({warm[-1]['accuracy']:.2%})"
                + (f", against {against[-1]['wall']:.1f} s ({against[-1]['accuracy']:.2%})" if against else ""),
                flush=True,
            )
        keras = run_keras(mnist, work / "keras.json")
    keras_99 = keras["seconds_to_99"]
    kinds = [("cold cache", cold), ("warm cache", warm)]
    if against:
        kinds.append((f"warm cache, the code at {source_label(args.against)}", against))
    median = {name: statistics.median(r["wall"] for r in runs) for name, runs in kinds}
    rows = ["| command | whole command (median) | test accuracy | vs Keras to 99.0% |", "|---|---|---|---|"]
    for name, runs in kinds:
        ratio = f"{keras_99 / median[name]:.1f}x faster" if keras_99 else "Keras never reached 99.0%"
        accuracies = ", ".join(f"{r['accuracy']:.2%}" for r in runs)
        rows.append(f"| `cnnlab train MNIST --recipe fast`, {name} | {median[name]:.1f} s | {accuracies} | {ratio} |")
    epochs = keras["epochs"]
    rows.append(
        f"| lesson's Keras (TensorFlow {keras['tensorflow']}), to 99.0% test | "
        f"{keras_99 or '-'} s of training | {keras['final_test_acc']:.2%} after "
        f"{len(epochs)} epochs ({epochs[-1]['seconds']:.0f} s; stopped at 99.0%) | 1x |"
    )
    body = (
        rows
        + [""]
        + [
            f"- Where the time went, {name} (the median run's run.json): "
            + phase_line(
                runs[len(runs) // 2]["timing"].get("phases", {}), runs[len(runs) // 2]["timing"].get("total_seconds")
            )
            for name, runs in ((name, sorted(runs, key=lambda r: r["wall"])) for name, runs in kinds)
        ]
    )
    lingering = [r["exit_after_last_line"] for r in cold + warm]
    body.append(
        f"\nThe process ended {statistics.median(lingering):.2f} s (median; {min(lingering):.2f}-"
        f"{max(lingering):.2f} s) after its last line of output, over the {len(lingering)} cnnlab runs above."
    )
    if against:
        pairs = [a["wall"] / w["wall"] for w, a in zip(warm, against, strict=True)]
        body.append(
            f"\nWarm, this code against the code at {source_label(args.against)}, round by round: "
            + ", ".join(f"{ratio:.2f}x" for ratio in pairs)
            + f" faster (median {statistics.median(pairs):.2f}x)"
        )
    write_page(
        "mnist_whole",
        "MNIST, whole command vs the lesson's Keras",
        command,
        "Process start to exit for cnnlab (report written); Keras counted from its first epoch to "
        "the first epoch whose test accuracy reaches 99.0% (data loading, model building and its "
        "per-epoch test scoring excluded: favourable to Keras).",
        body,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
