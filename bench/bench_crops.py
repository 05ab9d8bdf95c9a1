"""Stored margin and centre crops (issue #22): accuracy, decoding time and storage vs the square at the model's size.

    PYTHONPATH=src python bench/bench_crops.py DATA [DATA ...] --out-runs /tmp/crops [--seed 0]

Two storages, both keeping each photo's aspect (shorter side resized, the long side's ends cut):

* ``crop_pct 1`` (cnnlab before #22): the 224-px square is stored and is the model's input;
* ``crop_pct 0.875`` (the new default of pretrained models, timm's value for efficientnet_lite0):
  the 256-px square is stored, the model sees its centre 224 px (timm's evaluation transform).

Per folder: the whole command a user types, ``cnnlab train DATA --model efficientnet_lite0
--pretrained --crop-pct PCT``, once per storage with the same seed, each with an empty
decoded-image cache of its own (decoding is cold and the cache's size is the storage's); the
order alternates from one folder to the next. Then, in one process, decoding the folder's files to
each side without any cache, the two interleaved, 3 rounds, median. Every timed part holds the
machine's bench lock (``/work/scratch/bench.lock``) for itself only; with ``--unlocked-training`` the
training commands do not wait for it (their accuracy is the figure; their time is then marked as
measured beside other jobs). A run already done (``<run>.result.json`` in ``--out-runs``) is reused.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CNNLAB_TRAIN, write_page  # noqa: E402

from cnnlab.data.crop import stored_side  # noqa: E402
from cnnlab.data.discover import discover  # noqa: E402
from cnnlab.data.folder import decode_files  # noqa: E402

LOCK = Path("/work/scratch/bench.lock")
BASE = ["--model", "efficientnet_lite0", "--pretrained"]
PCTS = (1.0, 0.875)
SIDE = 224


@contextlib.contextmanager
def bench_lock() -> Iterator[None]:
    """The machine-wide lock timed runs take turns on (as ``flock /work/scratch/bench.lock``)."""
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def train(folder: Path, pct: float, runs: Path, seed: int, locked: bool = True) -> dict:
    name = f"{folder.name}-pct{pct:g}"
    saved = runs / f"{name}.result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    cache = runs / f"cache-{name}"
    command = [
        *CNNLAB_TRAIN,
        str(folder),
        *BASE,
        "--crop-pct",
        f"{pct:g}",
        "--seed",
        str(seed),
        "--runs-dir",
        str(runs),
        "--name",
        name,
    ]
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(cache)}
    with bench_lock() if locked else contextlib.nullcontext():
        load = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
    (runs / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    meta = json.loads((runs / name / "run.json").read_text())
    test = json.loads((runs / name / "metrics.json").read_text())["test"]
    stored = sum(p.stat().st_size for p in (cache / "decoded").glob("*") if p.is_file())
    result = {
        "folder": folder.name,
        "pct": pct,
        "acc": test["accuracy"],
        "loss": test["loss"],
        "top5": test.get("top5_accuracy"),
        "count": test["num_samples"],
        "wall": wall,
        "data_s": meta["timing"]["phases"].get("data"),
        "stored_mb": stored / 2**20,
        "load": load,
        "locked": locked,
    }
    saved.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return result


def decode_times(folder: Path, rounds: int = 3) -> dict[float, float]:
    """Median seconds to decode every file of ``folder`` per storage, no cache, interleaved."""
    listing = discover(folder)
    files = [(path, 0) for split in listing.files.values() for path, _ in split]
    times: dict[float, list[float]] = {pct: [] for pct in PCTS}
    with bench_lock():
        for _ in range(rounds):
            for pct in PCTS:
                started = time.perf_counter()
                decode_files(files, 3, stored_side(SIDE, pct), workers=2, cache=False)
                times[pct].append(time.perf_counter() - started)
    return {pct: statistics.median(values) for pct, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out-runs", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--unlocked-training", action="store_true", help="train without waiting for the bench lock")
    parser.add_argument("--no-decode-timing", action="store_true", help="skip the (locked) decoding comparison")
    args = parser.parse_args()
    args.out_runs.mkdir(parents=True, exist_ok=True)
    rows, decode_rows = [], []
    results = {}
    for i, folder in enumerate(args.folders):  # every training first: the decode timings wait for the lock
        order = PCTS if i % 2 == 0 else PCTS[::-1]
        results[folder] = {
            r["pct"]: r
            for r in (train(folder, pct, args.out_runs, args.seed, not args.unlocked_training) for pct in order)
        }
    for folder, got in results.items():
        old, new = got[1.0], got[0.875]
        delta = 100 * (new["acc"] - old["acc"])
        rows.append(
            f"| {folder.name} | {old['count']} | {100 * old['acc']:.2f}% | {100 * new['acc']:.2f}% | "
            f"{delta:+.2f} ({delta / (100 / old['count']):+.0f} photos) | {old['loss']:.3f} / {new['loss']:.3f} | "
            f"{old['wall']:.0f} s / {new['wall']:.0f} s{'' if old.get('locked', True) and new.get('locked', True) else ' (unlocked)'} | "
            f"{old['data_s']:.1f} s / {new['data_s']:.1f} s | "
            f"{old['stored_mb']:.0f} / {new['stored_mb']:.0f} MB | {old['load']:.1f} / {new['load']:.1f} |"
        )
        if args.no_decode_timing:
            continue
        seconds = decode_times(folder)
        count = sum(len(split) for split in discover(folder).files.values())
        decode_rows.append(
            f"| {folder.name} | {count} | {count / seconds[1.0]:.0f} img/s | {count / seconds[0.875]:.0f} img/s "
            f"| {seconds[0.875] / seconds[1.0]:.2f} |"
        )
    command = " ".join(
        [
            "PYTHONPATH=src python bench/bench_crops.py",
            *map(str, args.folders),
            "--out-runs",
            str(args.out_runs),
            "--seed",
            str(args.seed),
        ]
        + (["--unlocked-training"] if args.unlocked_training else [])
        + (["--no-decode-timing"] if args.no_decode_timing else [])
    )
    intro = (
        "Each row: `cnnlab train DATA --model efficientnet_lite0 --pretrained --crop-pct PCT --seed "
        f"{args.seed}` for PCT 1 (the 224-px square stored, the model's input: cnnlab before #22) and 0.875 "
        "(the 256-px square stored, the centre 224 px evaluated: timm's eval transform, now the default "
        "for pretrained models), each with an empty decoded-image cache. Both keep every photo's aspect "
        "(shorter side resized, the long side's ends cut): neither squashes. One seed each: one test photo "
        "is 100/count points. Without `--augment` (the default) training also sees the centre crop; "
        "stored MB is the decoded-image cache (SQLite) after the run."
    )
    body = [
        "| data | test photos | test acc, pct 1 | test acc, pct 0.875 | change | test loss | whole command | "
        "data phase (cold decode) | stored | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Decoding every file of the folder, no cache, 2 workers, 3 interleaved rounds, median:",
        "",
        "| data | files | to 224 px (pct 1) | to 256 px (pct 0.875) | time ratio 256/224 |",
        "|---|---|---|---|---|",
        *(decode_rows or ["(not measured in this run: `--no-decode-timing`)"]),
    ]
    write_page("crops", "Stored margin and centre crops vs the model-sized square (issue #22)", command, intro, body)


if __name__ == "__main__":
    main()
