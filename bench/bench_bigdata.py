"""Peak memory and speed of training from memory vs from the record store on disk (issue #22).

    PYTHONPATH=src python bench/bench_bigdata.py --count 20000 --cold-only   # photos, cache, store
    flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_bigdata.py --count 20000

On a folder of --count 224-px JPEGs made from imagenette_sub photos (bench/bigdata_photos.py):
 1. Memory: each variant in a fresh process (so its peak resident memory, getrusage's ru_maxrss,
    is its own) does what ``cnnlab train`` does first: prepare_data at 224 px with --image-store
    memory or disk (warm: the SQLite cache or the record store were filled by --cold-only), one
    shuffled pass of batch_loader over the training split, and 2 training steps of fast_cnn.
 2. Speed, side by side in one process: the same --pair-images training images as an in-memory
    split and as a stored split; loader passes alternate between them (--rounds each), then
    training steps of one fast_cnn alternate between batches of each (--steps each); medians.
 3. ``cnnlab train --image-store disk`` as 1 process and as 2 DDP processes on the CPU
    (--time-budget seconds of training): each process's peak from run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIDE, BATCH, MODEL = 224, 32, "fast_cnn"


def _prepare(folder: str, store: str):
    from cnnlab.config import build_config
    from cnnlab.data.prepare import prepare_data
    from cnnlab.data.preprocess import ModelInput

    config = build_config(data=folder, image_store=store, image_size=SIDE, channels=3, model=MODEL)
    return prepare_data(config.data, 0, ModelInput(3, SIDE))


def _train_step(model, optimizer, images, labels) -> None:
    import torch

    from cnnlab.data.normalize import Normalize

    loss = torch.nn.functional.cross_entropy(model(Normalize.to_unit(images)), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def _model(num_classes: int):
    import torch

    from cnnlab.models import create_model

    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=num_classes, in_chans=3, image_size=(SIDE, SIDE))
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def worker(store: str, folder: str) -> dict:
    """One variant in this process: prepare, a loader pass, 2 training steps; times and peak memory."""
    from cnnlab.data.loaders import batch_loader
    from cnnlab.data.normalize import Normalize
    from cnnlab.machine import peak_rss_bytes

    began = time.perf_counter()
    data = _prepare(folder, store)
    prepare_s = time.perf_counter() - began
    prepared_peak = peak_rss_bytes() or 0
    train = data.splits["train"]
    began, seen = time.perf_counter(), 0
    for images, _ in batch_loader(train, BATCH, shuffle=True, seed=0):
        seen += len(Normalize.to_unit(images))
    loader_ips = seen / (time.perf_counter() - began)
    model, optimizer = _model(data.num_classes)
    for _, (images, labels) in zip(range(2), batch_loader(train, BATCH, shuffle=True, seed=1)):
        _train_step(model, optimizer, images, labels)
    return {
        "store": store,
        "stored": train.stored,
        "train_images": len(train),
        "prepare_s": prepare_s,
        "prepared_peak_mb": prepared_peak / 2**20,
        "loader_ips": loader_ips,
        "peak_mb": (peak_rss_bytes() or 0) / 2**20,
    }


def pair(folder: str, count: int, rounds: int, steps: int) -> dict:
    """Loader passes and training steps alternating between in-memory and stored copies of ``count`` images."""
    import numpy as np

    from cnnlab.data.loaders import batch_loader
    from cnnlab.data.normalize import Normalize
    from cnnlab.data.types import ImageSet

    data = _prepare(folder, "disk")
    stored = data.splits["train"].subset(np.arange(count))
    sets = {"memory": ImageSet(stored.images, stored.labels, stored.ids), "disk": stored}
    passes: dict[str, list[float]] = {name: [] for name in sets}
    for round_ in range(rounds):
        for name, image_set in sets.items():
            began = time.perf_counter()
            for images, _ in batch_loader(image_set, BATCH, shuffle=True, seed=round_):
                Normalize.to_unit(images)
            passes[name].append(count / (time.perf_counter() - began))
    model, optimizer = _model(data.num_classes)
    loaders = {name: iter(batch_loader(image_set, BATCH, shuffle=True, seed=9)) for name, image_set in sets.items()}
    step_s: dict[str, list[float]] = {name: [] for name in sets}
    for step in range(steps + 1):  # the first pair warms up, off the record
        for name, batches in loaders.items():
            began = time.perf_counter()
            _train_step(model, optimizer, *next(batches))
            if step:
                step_s[name].append(time.perf_counter() - began)
    return {
        "loader_ips": {k: statistics.median(v) for k, v in passes.items()},
        "train_ips": {k: BATCH / statistics.median(v) for k, v in step_s.items()},
    }


def run_worker(env: dict[str, str], *args: str) -> dict:
    """This script with ``args`` in a fresh process; the JSON line it prints last."""
    result = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


DISK_OPTIONS = [
    "--image-store",
    "disk",
    "--image-size",
    str(SIDE),
    "--channels",
    "3",
    "--val-split",
    "256",
    "--test-split",
    "256",
]


def train_command(
    folder: Path,
    runs: Path,
    name: str,
    devices: int,
    budget: float,
    env: dict[str, str],
    options: list[str] | None = None,
) -> dict:
    """``cnnlab train FOLDER`` with ``options`` (default DISK_OPTIONS) on ``devices`` CPU processes; its run.json."""
    extra = ["--devices", "2", "--strategy", "ddp"] if devices > 1 else []
    command = [
        sys.executable,
        "-m",
        "cnnlab",
        "train",
        str(folder),
        *(DISK_OPTIONS if options is None else options),
        "--model",
        MODEL,
        "--batch-size",
        str(BATCH),
        "--epochs",
        "1",
        "--time-budget",
        str(budget),
        "--accelerator",
        "cpu",
        "--runs-dir",
        str(runs),
        "--name",
        name,
        *extra,
    ]
    began = time.perf_counter()
    result = subprocess.run(
        command,
        env={**env, "OMP_NUM_THREADS": "1"} if devices > 1 else env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"cnnlab train {folder} ({devices} process(es)) failed:\n{result.stderr[-3000:]}")
    run = json.loads((runs / name / "run.json").read_text())
    run["command_s"] = time.perf_counter() - began
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/scratch/bigdata"))
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--pair-images", type=int, default=3000, help="images of the side-by-side speed test")
    parser.add_argument("--rounds", type=int, default=3, help="loader passes per variant, side by side")
    parser.add_argument("--steps", type=int, default=10, help="training steps per variant, side by side")
    parser.add_argument("--budget", type=float, default=20.0, help="training seconds of the cnnlab train runs")
    parser.add_argument(
        "--cold-only",
        action="store_true",
        help="make the photos and fill cache and store (the untimed first runs), then stop: run "
        "this without the bench lock, then the timed rest with it",
    )
    parser.add_argument("--worker", choices=["memory", "disk", "pair"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (
            pair(args.folder, args.pair_images, args.rounds, args.steps)
            if args.worker == "pair"
            else worker(args.worker, args.folder)
        )
        print(json.dumps(result))
        return

    sys.path.insert(0, str(HERE))
    from bigdata_photos import make_photos
    from common import write_page

    folder = make_photos(args.root / f"photos{args.count // 1000}k", args.count)
    files = sum(1 for _ in folder.glob("*/*.jpg"))
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(args.root / "cache")}
    cold_file = args.root / f"cold{args.count // 1000}k.json"
    if args.cold_only or not cold_file.is_file():  # fills the SQLite cache (memory) and the record store (disk)
        cold = {store: run_worker(env, "--worker", store, "--folder", str(folder)) for store in ("memory", "disk")}
        cold_file.write_text(json.dumps(cold))
        if args.cold_only:
            return
    cold = json.loads(cold_file.read_text())
    rows = {store: run_worker(env, "--worker", store, "--folder", str(folder)) for store in ("memory", "disk")}
    print(rows, flush=True)
    speed = run_worker(
        env,
        "--worker",
        "pair",
        "--folder",
        str(folder),
        "--pair-images",
        str(args.pair_images),
        "--rounds",
        str(args.rounds),
        "--steps",
        str(args.steps),
    )
    print(speed, flush=True)
    runs = args.root / "runs"
    one = train_command(folder, runs, f"one-{time.time():.0f}", 1, args.budget, env)
    two = train_command(folder, runs, f"two-{time.time():.0f}", 2, args.budget, env)

    memory = [
        "| images from | peak RSS (MiB) | RSS after prepare_data (MiB) | prepare_data warm (s) "
        "| first run (s) | one pass of the training split (img/s) |",
        "|---|---|---|---|---|---|",
    ]
    for store, label in (("memory", "memory (--image-store memory)"), ("disk", "record store (--image-store disk)")):
        r = rows[store]
        memory.append(
            f"| {label} | {r['peak_mb']:,.0f} | {r['prepared_peak_mb']:,.0f} | {r['prepare_s']:.1f} "
            f"| {cold[store]['prepare_s']:.0f} | {r['loader_ips']:,.0f} |"
        )
    loader, train = speed["loader_ips"], speed["train_ips"]
    side = [
        "| images from | loader pass (img/s, median) | loader ratio | training step (img/s, median) | training ratio |",
        "|---|---|---|---|---|",
    ]
    for store, label in (("memory", "memory"), ("disk", "record store on disk")):
        side.append(
            f"| {label} | {loader[store]:,.0f} | {loader[store] / loader['memory']:.2f} "
            f"| {train[store]:.1f} | {train[store] / train['memory']:.2f} |"
        )
    ddp = [
        "| cnnlab train --image-store disk | peak RSS per process (MiB) | training (s) | whole command (s) |",
        "|---|---|---|---|",
    ]
    for label, run in (("1 process", one), ("2 DDP processes (--devices 2 --strategy ddp)", two)):
        peaks = ", ".join(f"{p:,}" for p in run["memory"]["peak_rss_mb"])
        ddp.append(f"| {label} | {peaks} | {run['timing']['train_seconds']:.0f} | {run['command_s']:.0f} |")
    decoded_gb = files * 3 * SIDE * SIDE / 1e9
    intro = (
        f"{files:,} JPEGs at {SIDE} px (crops of imagenette_sub photos, bench/bigdata_photos.py; "
        f"{decoded_gb:.1f} GB decoded), {rows['memory']['train_images']:,} in the training split; "
        f"{MODEL} at {SIDE} px, batch {BATCH}. 'first run' filled the SQLite cache (memory) or the record "
        "store (disk) from the JPEGs, before the timed part (--cold-only, without the bench lock)."
    )
    notes = (
        "The memory path holds the decoded split and, while prepare_data splits it, copies of it: its "
        "peak grows with the data (about twice its decoded size). The disk path holds a batch: its peak is "
        "torch's, Lightning's and the model's. Two DDP processes each read their share from one store "
        "through the OS page cache, which they share: each process peaks as one alone does, so the "
        "machine's memory does not double (with the memory path each process would hold its own copy). "
        "The 'one pass' column of the stored split runs right after the memory variant, whose peak plus the "
        "3 GB SQLite file it read can push the store out of the OS page cache: that pass may read from the "
        "disk (the loader asks the disk for each next batch ahead, RecordFile.prefetch); the side-by-side "
        "table reads both from RAM."
    )
    write_page(
        "bigdata",
        "Data beyond memory: in-memory vs record store on disk (issue #22)",
        f"flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_bigdata.py --count {args.count} "
        f"--pair-images {args.pair_images} --rounds {args.rounds} --steps {args.steps} --budget {args.budget:g}",
        intro,
        [
            "Memory, each variant in a fresh process:",
            "",
            *memory,
            "",
            f"Speed side by side in one process, {args.pair_images:,} training images as an in-memory "
            f"and as a stored split: {args.rounds} loader passes each (alternating), then {args.steps} "
            "training steps each (alternating batches, one model):",
            "",
            *side,
            "",
            f"Whole commands, {args.budget:g} s of training, 256 images each held out for validation and test:",
            "",
            *ddp,
            "",
            notes,
        ],
    )


if __name__ == "__main__":
    main()
