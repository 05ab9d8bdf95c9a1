"""Peak memory and speed of training from memory vs from the record store on disk (issue #22).

    PYTHONPATH=src python bench/bench_bigdata.py --count 20000 --cold-only   # photos, cache, store
    flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_bigdata.py --count 20000

On a folder of --count 224-px JPEGs made from imagenette_sub photos (bench/bigdata_photos.py),
each variant runs in a fresh process (so its peak resident memory, getrusage's ru_maxrss, is its
own) and does what ``cnnlab train`` does before and while training:
  prepare   prepare_data at 224 px, 3 channels, with --image-store memory or disk; warm: the
            SQLite cache (memory) or the record store (disk) were filled by an untimed first run
  loader    one shuffled pass over the training split with batch_loader, to float [0, 1] batches
  train     --steps SGD steps of fast_cnn at 224 px, batch 32, fed by batch_loader
Variants alternate (memory, disk, memory, disk, ...) for --rounds rounds; medians are reported.
Then ``cnnlab train --image-store disk`` runs as 1 process and as 2 DDP processes on the CPU
(--time-budget seconds of training), and each process's peak from run.json is reported.
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


def worker(store: str, folder: str, steps: int) -> dict:
    """One variant in this process: prepare, a loader pass, training steps; times and peak memory."""
    import torch

    from cnnlab.config import build_config
    from cnnlab.data.loaders import batch_loader
    from cnnlab.data.normalize import Normalize
    from cnnlab.data.prepare import InputNeeds, prepare_data
    from cnnlab.machine import peak_rss_bytes
    from cnnlab.models import create_model

    began = time.perf_counter()
    config = build_config(data=folder, image_store=store, image_size=SIDE, channels=3, model=MODEL)
    data = prepare_data(config.data, 0, InputNeeds(3, SIDE))
    prepare_s = time.perf_counter() - began
    prepared_peak = peak_rss_bytes() or 0
    train = data.splits["train"]
    began, seen = time.perf_counter(), 0
    for images, _ in batch_loader(train, BATCH, shuffle=True, seed=0):
        seen += len(Normalize.to_unit(images))
    loader_ips = seen / (time.perf_counter() - began)
    torch.manual_seed(0)
    model = create_model(MODEL, num_classes=data.num_classes, in_chans=3, image_size=(SIDE, SIDE))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = iter(batch_loader(train, BATCH, shuffle=True, seed=1))
    began = 0.0
    for step in range(steps + 2):  # 2 warm-up steps off the clock
        if step == 2:
            began = time.perf_counter()
        images, labels = next(batches)
        loss = torch.nn.functional.cross_entropy(model(Normalize.to_unit(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_ips = steps * BATCH / (time.perf_counter() - began)
    return {"store": store, "stored": train.stored, "train_images": len(train), "prepare_s": prepare_s,
            "prepared_peak_mb": prepared_peak / 2**20, "loader_ips": loader_ips, "train_ips": train_ips,
            "peak_mb": (peak_rss_bytes() or 0) / 2**20}


def run_worker(store: str, folder: Path, steps: int, env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", store, "--folder", str(folder), "--steps",
                             str(steps)], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{store} worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_command(folder: Path, runs: Path, name: str, devices: int, budget: float, env: dict[str, str]) -> dict:
    """``cnnlab train --image-store disk`` on ``devices`` CPU processes; its run.json."""
    extra = ["--devices", "2", "--strategy", "ddp"] if devices > 1 else []
    command = [sys.executable, "-m", "cnnlab", "train", str(folder), "--image-store", "disk", "--model", MODEL,
               "--image-size", str(SIDE), "--channels", "3", "--batch-size", str(BATCH), "--epochs", "1",
               "--time-budget", str(budget), "--accelerator", "cpu", "--val-split", "256", "--test-split", "256",
               "--runs-dir", str(runs), "--name", name, *extra]
    began = time.perf_counter()
    result = subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"} if devices > 1 else env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"cnnlab train ({devices} process(es)) failed:\n{result.stderr[-3000:]}")
    run = json.loads((runs / name / "run.json").read_text())
    run["command_s"] = time.perf_counter() - began
    return run


def median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/scratch/bigdata"))
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget", type=float, default=40.0, help="training seconds of the cnnlab train runs")
    parser.add_argument("--cold-only", action="store_true",
                        help="make the photos and fill cache and store (the untimed first runs), then stop: run "
                             "this without the bench lock, then the timed rest with it")
    parser.add_argument("--worker", choices=["memory", "disk"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.steps)))
        return

    sys.path.insert(0, str(HERE))
    from bigdata_photos import make_photos
    from common import write_page

    folder = make_photos(args.root / f"photos{args.count // 1000}k", args.count)
    files = sum(1 for _ in folder.glob("*/*.jpg"))
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(args.root / "cache")}
    cold_file = args.root / f"cold{args.count // 1000}k.json"
    if args.cold_only or not cold_file.is_file():  # fills the SQLite cache (memory) and the record store (disk)
        cold_file.write_text(json.dumps({store: run_worker(store, folder, 2, env) for store in ("memory", "disk")}))
        if args.cold_only:
            return
    cold = json.loads(cold_file.read_text())
    rows: dict[str, list[dict]] = {"memory": [], "disk": []}
    for _ in range(args.rounds):
        for store in rows:
            rows[store].append(run_worker(store, folder, args.steps, env))
            print(rows[store][-1], flush=True)
    runs = args.root / "runs"
    one = train_command(folder, runs, f"one-{time.time():.0f}", 1, args.budget, env)
    two = train_command(folder, runs, f"two-{time.time():.0f}", 2, args.budget, env)

    base = rows["memory"]
    table = ["| images from | peak RSS (MiB, median) | after prepare (MiB) | prepare warm (s) | first run (s) "
             "| loader (img/s) | training (img/s) | training ratio |", "|---|---|---|---|---|---|---|---|"]
    for store, label in (("memory", "memory (today)"), ("disk", "record store on disk")):
        r = rows[store]
        table.append(f"| {label} | {median(r, 'peak_mb'):,.0f} | {median(r, 'prepared_peak_mb'):,.0f} "
                     f"| {median(r, 'prepare_s'):.1f} | {cold[store]['prepare_s']:.0f} | {median(r, 'loader_ips'):,.0f} "
                     f"| {median(r, 'train_ips'):.1f} | {median(r, 'train_ips') / median(base, 'train_ips'):.2f} |")
    ddp = ["| cnnlab train --image-store disk | processes | peak RSS per process (MiB) | training (s) "
           "| whole command (s) |", "|---|---|---|---|---|"]
    for label, run in (("1 process", one), ("2 DDP processes (--devices 2 --strategy ddp)", two)):
        peaks = ", ".join(f"{p:,}" for p in run["memory"]["peak_rss_mb"])
        ddp.append(f"| {label} | {len(run['memory']['peak_rss_mb'])} | {peaks} | "
                   f"{run['timing']['train_seconds']:.0f} | {run['command_s']:.0f} |")
    decoded_gb = files * 3 * SIDE * SIDE / 1e9
    intro = (f"{files:,} JPEGs at {SIDE} px (crops of imagenette_sub photos, bench/bigdata_photos.py; "
             f"{decoded_gb:.1f} GB decoded), {rows['memory'][0]['train_images']:,} in the training split. "
             f"Each variant in a fresh process, {args.rounds} rounds interleaved, medians; {MODEL} at {SIDE} px, "
             f"batch {BATCH}, {args.steps} timed steps. 'first run' filled the SQLite cache (memory) or the "
             "record store (disk) from the JPEGs, before the timed rounds (--cold-only, without the bench lock). "
             "The cnnlab train runs hold out 256 images each for validation and test.")
    notes = ("The memory path holds the decoded split and, while prepare_data splits it, copies of it: its "
             "peak grows with the data. The disk path holds a batch: its peak is the model's and torch's. "
             "Two DDP processes each read their shard from one store through the shared page cache: per "
             "process the peak stays that of one, so the machine's memory does not double.")
    write_page("bigdata", "Data beyond memory: in-memory vs record store on disk (issue #22)",
               f"flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_bigdata.py --count {args.count} "
               f"--steps {args.steps} --rounds {args.rounds} --budget {args.budget:g}",
               intro, [*table, "", *ddp, "", notes])


if __name__ == "__main__":
    main()
