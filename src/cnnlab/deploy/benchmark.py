"""What serving a model costs: size, latency at batch 1, throughput at batch 32 and test accuracy.

Timings are interleaved: every candidate is called in turn, round after round, so a change in the
shared machine's load hits all of them alike; the median (and p95) over rounds is reported, and
ratios between candidates of one run are the figures to trust.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet
from cnnlab.deploy.runtime import Served, artifact_path, fastest_runtime, open_runtime, torch_threads, update_sidecar
from cnnlab.deploy.settings import ROUNDS, RUNTIMES, BenchmarkOptions
from cnnlab.errors import plural
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run_evaluation import run_data
from cnnlab.models.inference import accuracy, is_channels_last
from cnnlab.tables import Table
from cnnlab.threads import CpuSampler, busy_while_timed
from cnnlab.training.checkpoint import load_trained
from cnnlab.training.run_dir import open_run

log = logging.getLogger("cnnlab")
BATCH = 32  # the throughput batch
BURST = 3
GAP_SECONDS = 0.005  # lets one runtime's worker threads go idle before the next one is timed


@dataclass
class Timing:
    """Latency at batch 1 (median and 95th percentile, ms) and images per second at batch 32."""

    p50_ms: float
    p95_ms: float
    throughput: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def time_models(
    candidates: dict[str, tuple[nn.Module, torch.Tensor]], rounds: int = ROUNDS, max_seconds: float = 60.0
) -> dict[str, Timing]:
    """Interleaved timings of each ``name: (model, normalised images)``; at least one image each.

    Rounds stop early (after at least 3) once ``max_seconds`` are spent, so a slow model on a slow
    machine still gives a figure in bounded time.
    """
    inputs = {}
    for name, (model, images) in candidates.items():
        layout = torch.channels_last if is_channels_last(model) else torch.contiguous_format
        batch = images.repeat((BATCH + len(images) - 1) // len(images), 1, 1, 1)[:BATCH]
        inputs[name] = (images[:1].contiguous(memory_format=layout), batch.contiguous(memory_format=layout))

    def call(name: str, which: int) -> float:
        model = candidates[name][0]
        started = time.perf_counter()
        model(inputs[name][which])
        return time.perf_counter() - started

    single: dict[str, list[float]] = {name: [] for name in candidates}
    batched: dict[str, list[float]] = {name: [] for name in candidates}
    with torch.inference_mode():
        for name in candidates:  # warm-up: allocators, kernel choice, lazy initialisation
            call(name, 0), call(name, 0), call(name, 1)
        began = time.perf_counter()
        for done in range(rounds):
            for name in candidates:
                time.sleep(GAP_SECONDS)
                single[name] += [call(name, 0) for _ in range(BURST)][1:]  # the first call refills caches
            if done >= 2 and time.perf_counter() - began > max_seconds / 2:
                break
        began = time.perf_counter()
        for done in range(max(3, rounds // 4)):
            for name in candidates:
                time.sleep(GAP_SECONDS)
                batched[name].append(call(name, 1))
            if done >= 2 and time.perf_counter() - began > max_seconds / 2:
                break
    return {
        name: Timing(
            1000 * statistics.median(single[name]),
            1000 * _percentile(single[name], 0.95),
            BATCH / statistics.median(batched[name]),
        )
        for name in candidates
    }


def normalized(images: torch.Tensor, normalize: Normalize, count: int = BATCH) -> torch.Tensor:
    """The first ``count`` uint8 images as a model's float input."""
    return normalize(Normalize.to_unit(images[:count]))


def sample(images: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` of ``images`` drawn at random (seeded): splits may be stored class by class."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
    return images[order]


def weights_mb(model: nn.Module) -> float:
    """Size of a network's parameters and buffers as stored (float32 for a trained model)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors) / 1e6


def served_size_mb(served: Served) -> float:
    """The file a runtime serves from, or the weights of the PyTorch model."""
    if served.runtime == "pytorch":
        return weights_mb(served.model)
    return Path(served.source).stat().st_size / 1e6


def measure_served(served: dict[str, Served], test: ImageSet, rounds: int = ROUNDS) -> dict[str, dict[str, Any]]:
    """Size, timings and test accuracy of each runtime of one run (all scored on the same images)."""
    normalize = next(iter(served.values())).normalize
    images = normalized(test.images, normalize)
    timings = time_models({name: (s.model, images) for name, s in served.items()}, rounds)
    return {
        name: {
            "size_mb": served_size_mb(s),
            "timing": timings[name],
            "accuracy": accuracy(s.model, test.images, test.labels, normalize),
        }
        for name, s in served.items()
    }


def speed_rows(results: dict[str, dict[str, Any]], reference: str, labels: dict[str, str]) -> list[list[str]]:
    """Formatted rows: name, size, batch-1 p50/p95, batch-32 throughput, accuracy, speed vs ``reference``."""
    base = results[reference]["timing"].p50_ms
    rows = []
    for name, r in results.items():
        t: Timing = r["timing"]
        rows.append(
            [
                labels.get(name, name),
                f"{r['size_mb']:.2f}",
                f"{t.p50_ms:.2f}",
                f"{t.p95_ms:.2f}",
                f"{t.throughput:.0f}",
                f"{100 * r['accuracy']:.2f}%",
                f"{base / t.p50_ms:.2f}x",
            ]
        )
    return rows


def speed_columns(reference_label: str) -> list[str]:
    return [
        "runtime",
        "size MB",
        "batch 1 p50 ms",
        "batch 1 p95 ms",
        f"batch {BATCH} img/s",
        "test accuracy",
        f"speed vs {reference_label}",
    ]


def speed_record(results: dict[str, dict[str, Any]], threads: int, measured_by: str) -> dict[str, Any]:
    """What ``model.json`` keeps of a measurement, for picking the fastest runtime later."""
    return {
        "measured_by": measured_by,
        "threads": threads,
        "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "latency_ms": {k: round(r["timing"].p50_ms, 3) for k, r in results.items()},
        "throughput": {k: round(r["timing"].throughput, 1) for k, r in results.items()},
        "accuracy": {k: r["accuracy"] for k, r in results.items()},
    }


def benchmark_run(run: str | Path, options: BenchmarkOptions) -> tuple[Table, str]:
    """``cnnlab benchmark``: every runtime the run has, measured side by side on its test split.

    Returns:
        The table (also saved in ``tables/benchmark``) and the line saying which runtime
        ``predict`` will now use.
    """
    files = open_run(run)
    trained = load_trained(files)
    test = run_data(files, trained).splits["test"]
    threads, rounds = options.threads, options.rounds
    with torch_threads(threads):
        threads = torch.get_num_threads()  # the count asked for, or the thread policy's
        served = {"pytorch": open_runtime(files, "pytorch", threads, trained)}
        for runtime in RUNTIMES:
            path = artifact_path(files, runtime)
            if path is not None and path.is_file():
                served[runtime] = open_runtime(files, runtime, threads)
        sampler = CpuSampler()  # other processes' use while the runtimes are timed
        results = measure_served(served, test, rounds)
        busy = busy_while_timed(sampler.others())
    update_sidecar(files, trained, speed=speed_record(results, threads, "cnnlab benchmark"))
    best, why = fastest_runtime(files)
    labels = {
        name: f"{RUNTIMES[name]} ({s.source.name if name != 'pytorch' else 'checkpoint'})" for name, s in served.items()
    }
    notes = [
        (f"{plural(threads, 'thread')}; {len(test)} test images; batch-1 latency is the median of interleaved rounds"),
        f"predict uses {RUNTIMES[best]}: {why}",
    ]
    if busy:
        notes.insert(
            0, f"measured on a busy machine ({busy}): rerun when it is quiet before choosing a runtime by these times"
        )
        log.warning("measured on a busy machine: %s; rerun cnnlab benchmark when it is quiet", busy)
    if len(served) == 1:
        notes.append(
            f"only the checkpoint so far: cnnlab export {files.root} and cnnlab quantize {files.root} "
            "make faster runtimes"
        )
    table = Table(
        f"Runtimes of {files.root.name}",
        speed_columns(RUNTIMES["pytorch"]),
        speed_rows(results, "pytorch", labels),
        notes,
        {"threads": threads, **speed_record(results, threads, "cnnlab benchmark")},
    )
    table.save(files.tables, "benchmark")
    write_report(files.root)
    return table, f"predict will use {RUNTIMES[best]}: {why}"
