"""Training from packed shards (litdata) vs the record store on disk vs memory (issue #22).

    PYTHONPATH=src python bench/bench_shards.py --count 5000 --cold-only    # subset, cache, store, shards
    flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_shards.py --count 5000

On --count of bench_bigdata.py's 224-px JPEGs (/work/scratch/bigdata/photos20k, hard-linked into a
subset folder, the same share of each class):
 1. Memory, each variant in a fresh process (peak RSS is its own): prepare_data at 224 px (warm:
    --cold-only filled the SQLite cache, the record store and the shards), one shuffled pass over the
    training split through the loader training uses (batch_loader; for shards litdata's
    StreamingDataLoader), 2 training steps of fast_cnn.
 2. Speed side by side in one process: loader passes over the training split alternating between
    memory, record store and shards (--rounds each), medians and ratios; and what decoding the JPEGs
    in the loader would cost instead (decode_image at 224 px, one thread), which decides what shards hold.
 3. ``cnnlab train`` from the shards as 1 process and as 2 DDP processes (--budget s of training),
    against ``cnnlab train FOLDER --image-store disk`` (bench_bigdata.train_command): each process's peak RSS from run.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_bigdata import BATCH, MODEL, SIDE, _model, _prepare, _train_step, train_command  # noqa: E402

VARIANTS = ("memory", "disk", "shards")


def run_worker(env: dict[str, str], *args: str) -> dict:
    """This script with ``args`` in a fresh process; the JSON line it prints last."""
    import subprocess

    result = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def subset_folder(source: Path, out: Path, count: int) -> Path:
    """``out`` holding hard links to the first count/classes files of each class of ``source``."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    for folder in classes:
        (out / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.glob("*.jpg"))[: count // len(classes)]:
            if not (out / folder.name / path.name).exists():
                os.link(path, out / folder.name / path.name)
    return out


def _loader(train, variant: str, seed: int):
    from cnnlab.data.loaders import batch_loader

    if variant == "shards":
        return train.source.train_loader(BATCH, seed, (0, 1))
    return batch_loader(train, BATCH, shuffle=True, seed=seed)


def worker(variant: str, folder: str, packed: str) -> dict:
    """One variant in this process: prepare, a loader pass, 2 training steps; times and peak memory."""
    from cnnlab.data.normalize import Normalize
    from cnnlab.machine import peak_rss_bytes

    began = time.perf_counter()
    data = _prepare(packed if variant == "shards" else folder, "disk" if variant == "disk" else "memory")
    prepare_s = time.perf_counter() - began
    train = data.splits["train"]
    began, seen = time.perf_counter(), 0
    for images, _ in _loader(train, variant, 0):
        seen += len(Normalize.to_unit(images))
    loader_ips = seen / (time.perf_counter() - began)
    model, optimizer = _model(data.num_classes)
    for _, (images, labels) in zip(range(2), _loader(train, variant, 1)):
        _train_step(model, optimizer, images, labels)
    return {
        "variant": variant,
        "train_images": len(train),
        "prepare_s": prepare_s,
        "loader_ips": loader_ips,
        "peak_mb": (peak_rss_bytes() or 0) / 2**20,
    }


def side_by_side(folder: str, packed: str, rounds: int) -> dict:
    """Loader passes alternating between the three variants in this process; JPEG decoding for comparison."""
    from cnnlab.data.decode import decode_image
    from cnnlab.data.normalize import Normalize
    from cnnlab.data.types import ImageSet

    stored = _prepare(folder, "disk").splits["train"]
    trains = {
        "memory": ImageSet(stored.images, stored.labels, stored.ids),
        "disk": stored,
        "shards": _prepare(packed, "memory").splits["train"],
    }
    passes: dict[str, list[float]] = {name: [] for name in trains}
    for round_ in range(rounds):
        for name, train in trains.items():
            began, seen = time.perf_counter(), 0
            for images, _ in _loader(train, name, round_):
                seen += len(Normalize.to_unit(images))
            passes[name].append(seen / (time.perf_counter() - began))
    files = [Path(p) for p in stored.ids[:300]]
    began = time.perf_counter()
    for path in files:
        decode_image(path, channels=3, size=SIDE)
    return {
        "loader_ips": {k: statistics.median(v) for k, v in passes.items()},
        "decode_ips": len(files) / (time.perf_counter() - began),
        "jpeg_kb": statistics.mean(p.stat().st_size for p in files) / 1e3,
    }


def cold(folder: Path, packed: Path, env: dict[str, str], record: Path) -> dict:
    """Fills the SQLite cache and the record store (first runs) and packs the shards; their seconds."""
    import subprocess

    first = {v: run_worker(env, "--worker", v, "--folder", str(folder), "--packed", "-") for v in ("memory", "disk")}
    if not packed.exists():
        began = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "cnnlab",
                "data",
                "pack",
                str(folder),
                str(packed),
                "--image-size",
                str(SIDE),
                "--channels",
                "3",
                "--image-store",
                "disk",
            ],
            env=env,
            check=True,
        )
        first["pack_s"] = time.perf_counter() - began
    record.write_text(json.dumps(first))
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("/work/scratch/shards"))
    parser.add_argument("--photos", type=Path, default=Path("/work/scratch/bigdata/photos20k"))
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="loader passes per variant, side by side")
    parser.add_argument("--budget", type=float, default=15.0, help="training seconds of the cnnlab train runs")
    parser.add_argument("--cold-only", action="store_true", help="subset, cache, store and shards, then stop")
    parser.add_argument("--worker", choices=[*VARIANTS, "pair"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--packed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = (
            side_by_side(args.folder, args.packed, args.rounds)
            if args.worker == "pair"
            else worker(args.worker, args.folder, args.packed)
        )
        print(json.dumps(result))
        return
    from common import write_page

    folder = subset_folder(args.photos, args.root / f"photos{args.count // 1000}k", args.count)
    packed = args.root / f"packed{args.count // 1000}k"
    env = {**os.environ, "CNNLAB_CACHE_DIR": str(args.root / "cache")}
    record = args.root / f"cold{args.count // 1000}k.json"
    first = (
        cold(folder, packed, env, record) if args.cold_only or not record.is_file() else json.loads(record.read_text())
    )
    if args.cold_only:
        return
    where = ["--folder", str(folder), "--packed", str(packed)]
    rows = {v: run_worker(env, "--worker", v, *where) for v in VARIANTS}
    print(rows, flush=True)
    pair = run_worker(env, "--worker", "pair", *where, "--rounds", str(args.rounds))
    print(pair, flush=True)
    runs = args.root / "runs"
    stamp = f"{time.time():.0f}"
    commands = {
        "cnnlab train FOLDER --image-store disk, 1 process": train_command(
            folder, runs, f"disk-{stamp}", 1, args.budget, env
        ),
        "cnnlab train PACKED, 1 process": train_command(packed, runs, f"one-{stamp}", 1, args.budget, env, []),
        "cnnlab train PACKED, 2 DDP processes": train_command(packed, runs, f"two-{stamp}", 2, args.budget, env, []),
    }

    files = sum(1 for _ in folder.glob("*/*.jpg"))
    shard_mb = sum(p.stat().st_size for p in packed.rglob("*.bin")) / 1e6
    labels = {
        "memory": "memory (--image-store memory)",
        "disk": "record store (--image-store disk)",
        "shards": "shards (cnnlab data pack, litdata)",
    }
    memory = [
        "| images from | peak RSS (MiB) | prepare_data warm (s) | one pass of the training split (img/s) |",
        "|---|---|---|---|",
    ]
    for v in VARIANTS:
        memory.append(
            f"| {labels[v]} | {rows[v]['peak_mb']:,.0f} | {rows[v]['prepare_s']:.1f} | {rows[v]['loader_ips']:,.0f} |"
        )
    loader = pair["loader_ips"]
    side = ["| images from | loader pass (img/s, median) | ratio to memory |", "|---|---|---|"]
    side += [f"| {labels[v]} | {loader[v]:,.0f} | {loader[v] / loader['memory']:.2f} |" for v in VARIANTS]
    side.append(
        f"| JPEG files decoded at {SIDE} px (decode_image, 1 thread) | {pair['decode_ips']:,.0f} "
        f"| {pair['decode_ips'] / loader['memory']:.2f} |"
    )
    whole = ["| command | peak RSS per process (MiB) | training (s) | whole command (s) |", "|---|---|---|---|"]
    for label, run in commands.items():
        peaks = ", ".join(f"{p:,}" for p in run["memory"]["peak_rss_mb"])
        whole.append(f"| {label} | {peaks} | {run['timing']['train_seconds']:.0f} | {run['command_s']:.0f} |")
    intro = (
        f"{files:,} JPEGs at {SIDE} px (a subset of bench_bigdata.py's 21,000, for time; "
        f"{pair['jpeg_kb']:.0f} KB each on average), {rows['memory']['train_images']:,} in the training split "
        f"(as prepare_data holds out val and test by default); packed once by cnnlab data pack in {first.get('pack_s', float('nan')):.0f} s "
        f"(whole command, from the record store the first run filled, so without decoding) into {shard_mb:,.0f} MB of 64 MB shards; {MODEL} at {SIDE} px, batch {BATCH}."
    )
    decode, stream = pair["decode_ips"], loader["shards"]
    notes = (
        f"Shards hold the decoded image at the training size (150 KB at {SIDE} px, RGB; the JPEGs are "
        f"{pair['jpeg_kb']:.0f} KB) rather than the file's bytes: decoding the JPEGs runs at {decode:,.0f} img/s "
        f"per core here, {decode / stream:.2f}x the shard loader's speed, and on a CPU machine the cores "
        "decoding would be the cores training. The streaming path's peak RSS, like the record store's, does "
        "not grow with the data (litdata holds the shard being read); the in-memory path's does "
        "(bench/out/bigdata.md: 6.9 GB at 21,000 photos)."
    )
    write_page(
        "shards",
        "Training from packed shards vs the record store vs memory (issue #22)",
        f"flock /work/scratch/bench.lock env PYTHONPATH=src python bench/bench_shards.py --count {args.count} "
        f"--rounds {args.rounds} --budget {args.budget:g}",
        intro,
        [
            "Memory, each variant in a fresh process (prepare_data, a loader pass, 2 training steps):",
            "",
            *memory,
            "",
            f"Loader speed side by side in one process, {args.rounds} passes each (alternating):",
            "",
            *side,
            "",
            f"Whole commands, {args.budget:g} s of training:",
            "",
            *whole,
            "",
            notes,
        ],
    )


if __name__ == "__main__":
    main()
