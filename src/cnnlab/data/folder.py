"""Decodes a listing of image files into uint8 tensors, in parallel, skipping bad files."""

from __future__ import annotations

import logging
import multiprocessing as mp
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.collector import collector_paused
from cnnlab.data.decode import CENTER, Fit, UnreadableImage, decode_image, is_grayscale, probe_image
from cnnlab.data.decoded_cache import DecodedCache, FileKey, cache_enabled, file_keys
from cnnlab.progress import Progress

if TYPE_CHECKING:  # torch is imported in decode_files: spawned decoding workers start without it
    from cnnlab.data.types import ImageSet, SkippedFile

log = logging.getLogger("cnnlab")

CHUNK = 64  # files per thread-pool task: per-task overhead stays small next to 64 decodes
PROCESS_MIN_FILES = 2000  # fewer: starting worker processes costs more than they save
PROCESS_MAX_BYTES = 64 * 64 * 3  # per decoded image; larger outputs cost more to send back than threads
PROBE_SAMPLE = 256  # files whose headers decide channels and size: enough, and fast
LARGEST_DEFAULT_SIDE = 128  # own CNNs on photos: beyond this a CPU run gets slow for little gain


def guess_format(paths: list[Path]) -> tuple[bool, int]:
    """(all grayscale?, median shorter side) from the headers of an even sample of ``paths``."""
    step = max(1, len(paths) // PROBE_SAMPLE)
    gray, sides = True, []
    for path in paths[::step]:
        try:
            info = probe_image(path)
        except UnreadableImage:
            continue  # reported when the file is decoded
        gray = gray and is_grayscale(info)
        sides.append(min(info.width, info.height))
    return gray, int(statistics.median(sides)) if sides else LARGEST_DEFAULT_SIDE


def default_side(median_side: int) -> int:
    """Own CNNs see small images at their own size and photos at a CPU-friendly size."""
    return min(median_side, LARGEST_DEFAULT_SIDE)


def decode_into(paths: list[str], out: np.ndarray, channels: int, size: int, fit: Fit = CENTER) -> list[str | None]:
    """Decodes ``paths`` into ``out[i]`` (C, H, W), squares made as ``fit`` says; per file None, or why
    it is unusable."""
    reasons: list[str | None] = []
    for i, path in enumerate(paths):
        try:
            out[i] = decode_image(Path(path), channels=channels, size=size, fit=fit).transpose(2, 0, 1)
            reasons.append(None)
        except UnreadableImage as exc:
            reasons.append(exc.reason)
    return reasons


def _decode_chunk(paths: list[str], channels: int, size: int, fit: Fit) -> tuple[np.ndarray, list[str | None]]:
    """One process-pool task: a chunk of files decoded into a new array."""
    out = np.empty((len(paths), channels, size, size), dtype=np.uint8)
    return out, decode_into(paths, out, channels, size, fit)


def _pool_context() -> BaseContext:
    # fork starts a worker in milliseconds and the children only run PIL and numpy, which is
    # how torch's DataLoader starts its workers on Linux too; elsewhere fork is unsafe.
    return mp.get_context("fork" if sys.platform == "linux" else "spawn")


def _use_processes(count: int, channels: int, size: int, workers: int) -> bool:
    """Processes for many small outputs, where PIL's per-file Python work holds the GIL."""
    return workers > 1 and count >= PROCESS_MIN_FILES and channels * size * size <= PROCESS_MAX_BYTES


def decode_parallel(
    paths: list[str], out: np.ndarray, channels: int, size: int, workers: int, fit: Fit = CENTER
) -> list[str | None]:
    """Decodes in chunks of CHUNK files on a pool of ``workers``, into ``out``.

    Threads or processes, whichever bench/bench_loader.py measured faster (2-core AMD EPYC,
    2 workers, decode only). CIFAR-10 JPEGs kept at 32 px: processes 5,130 img/s vs threads
    3,380 with a core free, and even (4,245 vs 4,029) when other jobs kept both cores busy.
    400-px JPEGs to 224 px: threads 368 img/s vs processes 292. A 32-px JPEG spends most of its
    ~300 us in PIL's Python code, which holds the GIL, so only processes use both cores; a big
    JPEG spends it in libjpeg and resampling, which release the GIL, and threads then win as
    they write straight into ``out`` while processes pickle 150 KB per image back.
    """
    with Progress(f"decoding {len(paths):,} image files", len(paths), "images") as progress:
        return _decode_chunks(paths, out, channels, size, workers, progress, fit)


def _decode_chunks(
    paths: list[str], out: np.ndarray, channels: int, size: int, workers: int, progress: Progress, fit: Fit
) -> list[str | None]:
    starts = list(range(0, len(paths), CHUNK))
    if _use_processes(len(paths), channels, size, workers):
        try:
            with ProcessPoolExecutor(workers, mp_context=_pool_context()) as pool:
                jobs = [(paths[s : s + CHUNK], channels, size, fit) for s in starts]
                reasons: list[str | None] = []
                for start, (arrays, chunk) in zip(starts, pool.map(_decode_chunk, *zip(*jobs))):
                    out[start : start + len(chunk)] = arrays
                    reasons += chunk
                    progress.advance(len(chunk))
                return reasons
        except (OSError, BrokenProcessPool) as exc:  # no /dev/shm, process limits: threads still work
            log.debug("decoding with threads: no process pool (%s)", exc)

    def work(start: int) -> list[str | None]:
        end = min(start + CHUNK, len(paths))
        reasons = decode_into(paths[start:end], out[start:end], channels, size, fit)
        progress.advance(len(reasons))
        return reasons

    if workers <= 1 or len(paths) <= CHUNK:
        return [r for start in starts for r in work(start)]
    with ThreadPoolExecutor(max_workers=workers) as threads:
        return [r for chunk in threads.map(work, starts) for r in chunk]


def decode_files(
    files: list[tuple[Path, int]],
    channels: int,
    size: int,
    workers: int,
    cache: bool | None = None,
    cache_read_only: bool = False,
    fit: Fit = CENTER,
) -> tuple[ImageSet, list[SkippedFile]]:
    """Decodes ``(path, label)`` pairs to an ImageSet of ``size`` x ``size`` images, made as ``fit`` says.

    With ``cache`` (default: on unless ``CNNLAB_NO_CACHE`` is set) images decoded by an earlier
    run are read from the decoded-image cache (see cnnlab.data.decoded_cache) when their file is
    unchanged, and newly decoded ones are added to it, unless ``cache_read_only``.
    """
    import torch

    from cnnlab.data.types import ImageSet, SkippedFile

    use_cache = cache_enabled() if cache is None else cache
    count = len(files)
    out = np.empty((count, channels, size, size), dtype=np.uint8)
    hits = np.zeros(count, dtype=bool)
    store = DecodedCache(read_only=cache_read_only) if use_cache and count else None
    keys: list[FileKey | None] = []
    if store is not None:
        # stat before reading: a file changed during decoding gets the old key, so it is
        # re-decoded next time rather than served stale.
        with collector_paused():  # a key per file: as a listing, see discover
            keys = file_keys([path for path, _ in files])
            hits = store.load(keys, size, channels, out, fit.key)
        store.close()  # no open SQLite handle across the fork of decoding processes; save reopens
    todo = np.flatnonzero(~hits)
    target = out if len(todo) == count else np.empty((len(todo), channels, size, size), dtype=np.uint8)
    reasons = decode_parallel([str(files[i][0]) for i in todo], target, channels, size, workers, fit)
    if target is not out:
        out[todo] = target
    good = np.ones(count, dtype=bool)
    skipped = []
    for i, reason in zip(todo, reasons):
        if reason is not None:
            good[i] = False
            skipped.append(SkippedFile(str(files[i][0]), reason))
    if store is not None:
        fresh = [(i, key) for i, reason in zip(todo, reasons) if reason is None and (key := keys[i]) is not None]
        store.save(((key, out[i]) for i, key in fresh), size, channels, fit.key)
        store.close()
    if not good.all():
        out = out[good]
    with collector_paused():
        kept = files if len(skipped) == 0 else [item for item, ok in zip(files, good.tolist()) if ok]
        labels = torch.as_tensor([label for _, label in kept], dtype=torch.long)
        ids = [str(path) for path, _ in kept]
    return ImageSet(torch.from_numpy(out), labels, ids), skipped
