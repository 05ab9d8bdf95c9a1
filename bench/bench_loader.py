"""Images per second delivered to the model: cnnlab's loader (cold and warm cache) vs plain torchvision.

    PYTHONPATH=src python bench/bench_loader.py            # 10k CIFAR-10 + 2,000 400-px JPEGs
    PYTHONPATH=src python bench/bench_loader.py --full     # all 50k CIFAR-10 training images

Every method makes one full pass over a folder, with the same workers and batch size, and ends
with float batches in [0, 1] (what the model's Normalize gets):
  torchvision  ImageFolder + Resize/CenterCrop/ToTensor + DataLoader(num_workers=W)
  cnnlab cold  discover + decode (pool of W; cnnlab picks threads or processes) + write the cache
               + batch_loader, from an empty cache
  cnnlab cold, no cache, threads/processes   decoding forced onto W threads or W processes
  cnnlab warm  discover + read the cache + batch_loader
  cnnlab warm, torch 1 thread   the same with torch.set_num_threads(1): on a busy machine torch's
               2-thread ops on small batches wait for the other core (see the note in the output)
Each is run --repeats times, interleaved, and the best time is kept (the machine is shared).
Writes the table to bench/out/loader.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from cnnlab.machine import cpu_name

HERE = Path(__file__).resolve().parent
DATASETS = Path.home() / ".cache" / "cnnlab" / "datasets"
BENCH = Path.home() / ".cache" / "cnnlab" / "bench"
SHARED = HERE.parent.parent / "shared" / "data"


def cifar_subset(per_class: int | None) -> Path:
    """CIFAR-10 train (unpacked from ../shared/data once); a symlinked subset of per_class images."""
    if not (DATASETS / "cifar10" / "train").is_dir():
        DATASETS.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / "cifar10.tar.gz") as tar:
            tar.extractall(DATASETS, filter="data")
    train = DATASETS / "cifar10" / "train"
    if per_class is None:
        return train
    out = BENCH / f"cifar10-{per_class}"
    for class_dir in sorted(train.iterdir()):
        (out / class_dir.name).mkdir(parents=True, exist_ok=True)
        for src in sorted(class_dir.iterdir())[:per_class]:
            link = out / class_dir.name / src.name
            if not link.exists():
                link.symlink_to(src)
    return out


def big_jpegs(total: int = 2000, side: int = 400) -> Path:
    """CIFAR-10 images upscaled to side x side JPEGs (quality 90), total/10 per class."""
    from PIL import Image

    out = BENCH / f"jpeg{side}"
    train = DATASETS / "cifar10" / "train"
    for class_dir in sorted(train.iterdir()):
        (out / class_dir.name).mkdir(parents=True, exist_ok=True)
        for src in sorted(class_dir.iterdir())[: total // 10]:
            dst = out / class_dir.name / src.name
            if not dst.exists():
                with Image.open(src) as im:
                    im.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(dst, quality=90)
    return out


def listing(root: Path) -> list[tuple[Path, int]]:
    from cnnlab.data.discover import discover

    files = discover(root).files["train"]
    names = {name: i for i, name in enumerate(sorted({label for _, label in files}))}
    return [(path, names[label]) for path, label in files]


def drain_cnnlab(image_set, batch: int) -> int:
    from cnnlab.data.loaders import batch_loader
    from cnnlab.data.normalize import Normalize

    seen = 0
    for images, _ in batch_loader(image_set, batch, shuffle=True):
        seen += len(Normalize.to_unit(images))
    return seen


def run_torchvision(root: Path, size: int, workers: int, batch: int) -> int:
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    loader = DataLoader(
        datasets.ImageFolder(str(root), transform=tf), batch_size=batch, shuffle=True, num_workers=workers
    )
    return sum(len(images) for images, _ in loader)


LOAD_SECONDS: list[float] = []  # the last cnnlab run's time to get the split as one tensor


def run_cnnlab(root: Path, size: int, workers: int, batch: int, cache: bool) -> int:
    from cnnlab.data.folder import decode_files

    started = time.perf_counter()
    image_set, _ = decode_files(listing(root), 3, size, workers, cache=cache)
    LOAD_SECONDS.append(time.perf_counter() - started)
    return drain_cnnlab(image_set, batch)


def one_thread(fn: Callable[..., int], *args: object) -> int:
    """Runs ``fn`` with torch limited to one intra-op thread, as DataLoader workers are."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def forced(pool: str, fn: Callable[..., int], *args: object) -> int:
    """Runs ``fn`` with decode_files forced onto a thread or a process pool."""
    from cnnlab.data import folder

    saved = folder.PROCESS_MIN_FILES, folder.PROCESS_MAX_BYTES
    folder.PROCESS_MIN_FILES, folder.PROCESS_MAX_BYTES = (10**12, 0) if pool == "threads" else (0, 10**12)
    try:
        return fn(*args)
    finally:
        folder.PROCESS_MIN_FILES, folder.PROCESS_MAX_BYTES = saved


def bench(name: str, root: Path, size: int, args: argparse.Namespace) -> list[dict]:
    count = len(listing(root))
    methods: dict[str, Callable[[], int]] = {
        "torchvision ImageFolder + DataLoader": lambda: run_torchvision(root, size, args.workers, args.batch),
        "cnnlab cold (decode, write cache)": lambda: run_cnnlab(root, size, args.workers, args.batch, True),
        "cnnlab cold, no cache, threads": lambda: forced(
            "threads", run_cnnlab, root, size, args.workers, args.batch, False
        ),
        "cnnlab cold, no cache, processes": lambda: forced(
            "processes", run_cnnlab, root, size, args.workers, args.batch, False
        ),
        "cnnlab warm (cache)": lambda: run_cnnlab(root, size, args.workers, args.batch, True),
        "cnnlab warm (cache), torch 1 thread": lambda: one_thread(
            run_cnnlab, root, size, args.workers, args.batch, True
        ),
    }
    best = {m: (float("inf"), float("nan")) for m in methods}  # (total, of which loading)
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="cnnlab-bench-cache-") as cache_dir:
            os.environ["CNNLAB_CACHE_DIR"] = cache_dir  # an empty cache: cold, then warm
            for method, fn in methods.items():
                LOAD_SECONDS.clear()
                started = time.perf_counter()
                assert fn() == count, method
                total = time.perf_counter() - started
                if total < best[method][0]:
                    best[method] = (total, LOAD_SECONDS[0] if LOAD_SECONDS else float("nan"))
    base = best["torchvision ImageFolder + DataLoader"][0]
    return [
        {"data": name, "method": m, "images": count, "seconds": t, "load": load, "rate": count / t, "ratio": base / t}
        for m, (t, load) in best.items()
    ]


NOTE = (
    "'of which to tensors': discover + decode (or read the cache) into one uint8 tensor; the rest of "
    "'seconds' is iterating cnnlab.data.loaders.batch_loader and converting each batch to float. "
    "Source files are in the OS page cache for every method (each method reads them in every round).\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="all 50,000 CIFAR-10 training images (default 10,000)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    machine = (
        f"{cpu_name()}, {os.cpu_count()} logical cores; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"machine: {machine}\nworkers {args.workers}, batch {args.batch}, best of {args.repeats}", flush=True)
    cifar = cifar_subset(None if args.full else 1000)
    rows = bench(f"CIFAR-10 train{'' if args.full else ' 10k'}, 32-px JPEG -> 32", cifar, 32, args)
    rows += bench("2,000 400x400 JPEGs -> 224", big_jpegs(), 224, args)
    header = (
        "| data | method | images | seconds | of which to tensors | images/s | vs torchvision |\n"
        "|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['data']} | {r['method']} | {r['images']} | {r['seconds']:.2f} | "
        f"{'-' if r['load'] != r['load'] else format(r['load'], '.2f')} | {r['rate']:,.0f} | {r['ratio']:.2f}x |"
        for r in rows
    ]
    command = "PYTHONPATH=src python bench/bench_loader.py " + " ".join(sys.argv[1:])
    text = (
        f"Command: `{command.strip()}`\n\nMachine: {machine}; workers {args.workers}, batch {args.batch}, "
        f"best of {args.repeats}.\n\n{header}\n" + "\n".join(lines) + "\n\n" + NOTE
    )
    print(text)
    out = HERE / "out" / "loader.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
