"""Issue #5's "done when": `cnnlab train PHOTOS --model efficientnet_lite0 --pretrained` on a small
two-class folder of real photos, offline, timed from the command line.

    PYTHONPATH=src python bench/bench_photo_folder.py --threads 2        # ~10 min

The folders are CIFAR-10 photos from ../shared/data (32x32, so the hardest case for an ImageNet
backbone: each is upscaled to the model's 224 px): ``--per-class`` training images of two classes
in a flat ``<class>/`` folder, as a user would bring them (cnnlab splits 80/10/10). Each command
runs as a user runs it (a fresh ``python -m cnnlab`` process, wall time from start to report),
then ``cnnlab evaluate RUN --data HELD_OUT`` scores the run on the 2,000 CIFAR-10 *test* photos
of the two classes, which no run has seen (the run's own test split is only 10% of the folder).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from common import DATASETS, dataset, write_page  # noqa: E402

PAIRS = [("cat", "dog"), ("airplane", "ship")]
VARIANTS = [  # (label, extra flags): the defaults, then the cheaper choices a user can make
    ("defaults", []),
    ("--stages frozen", ["--stages", "frozen"]),
    ("--image-size 160", ["--image-size", "160"]),
]


def photo_folders(pair: tuple[str, str], per_class: int) -> tuple[Path, Path]:
    """(training folder with ``per_class`` photos per class, held-out folder of their test photos)."""
    source = dataset("cifar10")
    root = DATASETS / "bench-photos" / f"{pair[0]}-{pair[1]}-{per_class}"
    for split, count in (("train", per_class), ("test", None)):
        for name in pair:
            target = root / split / name
            if target.is_dir():
                continue
            target.mkdir(parents=True)
            for path in sorted((source / split / name).iterdir())[:count]:
                shutil.copy2(path, target / path.name)
    return root / "train", root / "test"


def cnnlab(*args: str, threads: int) -> tuple[float, str]:
    """Runs ``python -m cnnlab ARGS`` as a user would; returns (wall seconds, stderr + stdout)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cnnlab", *args], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"cnnlab {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stderr + done.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=150, help="training photos per class (default 150)")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for each command (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # as each command gets it, so the machine line says so
    command = "PYTHONPATH=src python bench/bench_photo_folder.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    runs_dir = DATASETS.parent / "bench-runs" / "photo-folder"
    shutil.rmtree(runs_dir, ignore_errors=True)
    rows = [
        "| photos | command | wall time (s) | stage-1 test acc (own split) | final test acc (own split) "
        "| held-out test acc (2,000 photos) |",
        "|---|---|---|---|---|---|",
    ]
    for pair in PAIRS:
        train, held_out = photo_folders(pair, args.per_class)
        for label, flags in VARIANTS:
            name = f"{pair[0]}-{pair[1]}-{label.strip('-').replace(' ', '')}"
            seconds, _ = cnnlab(
                "train",
                str(train),
                "--model",
                "efficientnet_lite0",
                "--pretrained",
                *flags,
                "--runs-dir",
                str(runs_dir),
                "--name",
                name,
                threads=args.threads,
            )
            run = runs_dir / name
            meta = json.loads((run / "run.json").read_text())
            cnnlab("evaluate", str(run), "--data", str(held_out), threads=args.threads)
            held_acc = json.loads((run / "eval" / held_out.name / "metrics.json").read_text())["test"]["accuracy"]
            stages = meta["stages"]
            rows.append(
                f"| {pair[0]} vs {pair[1]}, {2 * args.per_class} | `{label}` | {seconds:.0f} | "
                f"{100 * stages[0]['test_acc']:.1f}% | {100 * stages[-1]['test_acc']:.1f}% | "
                f"{100 * held_acc:.1f}% |"
            )
            print(rows[-1], flush=True)
    write_page(
        "photo_folder",
        "A small folder of real photos, pretrained EfficientNet-Lite0, offline",
        command,
        f"Each row is one `cnnlab train FOLDER --model efficientnet_lite0 --pretrained [flags]` on {args.per_class} "
        "CIFAR-10 training photos per class (a flat folder: cnnlab keeps 80% for training, 10% for validation, "
        "10% for its own test split), timed from process start to the written report, with the built-in "
        "ImageNet weights and no network. The held-out column is `cnnlab evaluate RUN --data` on the two "
        "classes' 2,000 CIFAR-10 test photos.",
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
