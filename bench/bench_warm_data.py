"""The data step of ``cnnlab train FOLDER --recipe fast`` on a warm decoded-image cache: CPU and wall.

    python bench/bench_warm_data.py [FOLDER] [--repeats 7] [--recipe fast]

FOLDER defaults to ~/.cache/cnnlab/datasets/mnist (70,000 PNG digits in train/ and test/). The first
call fills the cache if it is cold (``$CNNLAB_CACHE_DIR``, else ~/.cache/cnnlab) and is not counted;
each repeat then times ``prepare_data`` as ``cnnlab train`` calls it, with the modules a training
command has imported by then (the collector walks all their objects), and its parts on their own:
listing (``discover``), one stat per file (the cache keys) and the cache read. Medians of the repeats;
the load average is printed, as a shared machine slows the wall clock most.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import cnnlab.training.run_fit  # noqa: F401  # what `cnnlab train` holds in memory when it prepares data
from cnnlab.config import build_config
from cnnlab.data import decoded_cache
from cnnlab.data.decoded_cache import DecodedCache
from cnnlab.data.discover import discover
from cnnlab.data.prepare import image_format, prepare_data

DEFAULT = Path.home() / ".cache" / "cnnlab" / "datasets" / "mnist"


def timed(work: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``repeats`` calls."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        work()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", nargs="?", default=str(DEFAULT))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--recipe", default="fast")
    args = parser.parse_args()
    cfg = build_config(data=args.folder, recipe=args.recipe)
    data = prepare_data(cfg.data, cfg.train.seed)  # fills a cold cache; not timed
    listing = discover(Path(args.folder))
    paths = [path for files in listing.files.values() for path, _ in files]
    channels, side = image_format(listing, cfg.data)
    # file_keys where this version has it, else the key per file it used before
    key_all = getattr(decoded_cache, "file_keys", None) or (lambda ps: [decoded_cache.file_key(p) for p in ps])
    keys = key_all(paths)
    out = np.empty((len(paths), channels, side, side), dtype=np.uint8)

    def read() -> None:
        with DecodedCache(read_only=True) as store:
            hits = store.load(keys, side, channels, out)
        assert hits.all(), f"{int((~hits).sum())} images not in the cache: is it warm?"

    print(f"{args.folder}: {len(paths):,} files, {channels}x{side}x{side}; {len(gc.get_objects()):,} objects tracked")
    print("fingerprints: " + ", ".join(f"{name} {s.fingerprint()}" for name, s in data.splits.items()))
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [
        ("data step (prepare_data)", lambda: prepare_data(cfg.data, cfg.train.seed)),
        ("  listing (discover)", lambda: discover(Path(args.folder))),
        ("  cache keys (stat)", lambda: key_all(paths)),
        ("  cache read", read),
    ]
    print(f"{'':28s} {'CPU s':>7s} {'wall s':>7s}   (median of {args.repeats})")
    for label, work in rows:
        cpu, wall = timed(work, args.repeats)
        print(f"{label:28s} {cpu:7.3f} {wall:7.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
