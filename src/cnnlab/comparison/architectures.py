"""``cnnlab compare``: architectures side by side, measured on this machine and cited for ImageNet.

Each model is measured in a fresh process (``probe``): parameters, layers, MACs, file size,
latency, throughput and forward-pass memory. Its ImageNet top-1 comes from a cited table
(``imagenet``). With data, every model is then trained the same way (``training``), each into a
normal run folder. A model that cannot be built or measured becomes a row with the reason.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.comparison.imagenet import SOURCE, imagenet_top1
from cnnlab.comparison.measure import LAYER_COUNTING, MAC_OPERATIONS, ROUNDS, Timing, time_interleaved
from cnnlab.comparison.outputs import html_summary, write_outputs
from cnnlab.comparison.probe import IMAGENET_CLASSES, ProbeSpec, open_probe
from cnnlab.comparison.training import same_way, split_counts, train_model
from cnnlab.config import RunConfig, merge_config
from cnnlab.errors import CnnlabError, plural
from cnnlab.machine import machine_line
from cnnlab.models import resolve_name
from cnnlab.threads import CpuSampler, busy_while_timed, choose
from cnnlab.training.run_dir import claim_folder
from cnnlab.training.run_fit import TrainingInterrupted

if TYPE_CHECKING:
    from cnnlab.comparison.probe import ChildProbe, LocalProbe

    Probe = ChildProbe | LocalProbe

log = logging.getLogger("cnnlab")
DEFAULT_FOLDER = Path("comparisons")
# Batch-1 times whose interquartile range exceeds their median were disturbed: on a quiet machine
# VGG16's reached 0.73 (weights streamed from memory), under another training Lite0's 2.1.
BUSY_SPREAD = 1.0
BUSY_MIN_SECONDS = 0.002  # below 2 ms timer noise alone can spread that much


@dataclass(frozen=True)
class CompareSettings:
    """How the models are measured (and, with data, at what image size they train)."""

    image_size: int = 224
    batch_size: int = 16  # throughput batch
    threads: int | None = None  # None: torch's current number
    repeats: int = 20
    max_seconds: float = 10.0  # per timing; a timing stops early after this long (3 repeats at least)
    channels_last: bool = True
    pretrained: bool = False  # ImageNet weights where they can be had; random (or from scratch) otherwise
    weights: Mapping[str, str] = field(default_factory=dict)  # model name -> local state dict file
    # False: measure in this process, which starts faster (no new Python and torch per model) but
    # lets a model's memory figures include what the models before it left allocated.
    isolate: bool = True


@dataclass
class Comparison:
    """What ``compare_architectures`` measured and where it wrote it."""

    folder: Path
    rows: list[dict[str, Any]]
    settings: CompareSettings
    threads: int
    command: str
    machine: str
    how: dict[str, str]
    same_way: str | None = None
    busy: str | None = None  # why the timings are not to be trusted (another process ran): rerun
    files: dict[str, Path] = field(default_factory=dict)
    interrupted: str | None = None  # the run folder Ctrl-C stopped, to resume

    @property
    def trained(self) -> bool:
        return self.same_way is not None

    def _repr_html_(self) -> str:  # the table and the charts in Jupyter
        return html_summary(self)

    def as_json(self) -> dict[str, Any]:
        settings = {**asdict(self.settings), "threads": self.threads, "weights": dict(self.settings.weights)}
        return {
            "folder": str(self.folder),
            "command": self.command,
            "machine": self.machine,
            "settings": settings,
            "how_measured": self.how,
            "trained_the_same_way": self.same_way,
            "busy_machine": self.busy,
            "files": {k: str(v) for k, v in self.files.items()},
            "rows": self.rows,
        }


def how_measured(settings: CompareSettings, threads: int) -> dict[str, str]:
    """One sentence per figure: what exactly was measured, and how."""
    size, batch = settings.image_size, settings.batch_size
    layout = "channels_last" if settings.channels_last else "NCHW"
    return {
        "params": f"parameters of each model with a {IMAGENET_CLASSES}-class (ImageNet) head, total and trainable",
        "layers": LAYER_COUNTING,
        "macs": f"multiply-accumulates of one {size}x{size} RGB image (batch 1), from torch.utils.flop_counter."
        f"FlopCounterMode (FLOPs / 2); it counts {MAC_OPERATIONS}",
        "size": "FP32 weights saved as a safetensors file (MB = 10^6 bytes)",
        "latency": f"batch 1: median, interquartile range (IQR) and fastest of up to {settings.repeats} timed forward "
        f"passes (at most {settings.max_seconds:g} s, at least 3) after 3 warm-up passes, under "
        f"torch.inference_mode, {plural(threads, 'thread')}, {layout} layout; "
        f"the models are timed in turns, {ROUNDS} rounds of a block each, so load from another "
        "process falls on all of them alike",
        "throughput": f"images per second in batches of {batch}, from the same kind of timing (1 warm-up batch); "
        "the fastest batch beside the median",
        "memory": f"how far the process's resident memory peaked above the loaded model during the first forward "
        f"pass at batch 1 and at batch {batch} (the kernel's high-water mark, reset before each)",
        "isolation": (
            "each model is built in a fresh Python process (its memory figures measured there, one "
            "model after the other), and the processes are then timed in turns"
            if settings.isolate
            else "every model built and timed in one process"
        ),
        "weights": "random = randomly initialised (size, cost and speed do not depend on the weights); ImageNet = "
        "pretrained weights loaded",
        "imagenet": SOURCE,
    }


def _folder_name(models: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(models)).strip("-")[:80] or "comparison"


def _mb(count: int | None) -> float | None:
    return None if count is None else round(count / 1e6, 2)


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 4)


def _rate(images: int, seconds: float) -> float:
    return round(images / seconds, 2)


def _figures(probe: dict[str, Any]) -> dict[str, Any]:
    """The probe's static figures in the row's units: counts, MB."""
    return {
        "status": "ok",
        "weights": probe["weights"],
        "params_total": probe["params_total"],
        "params_trainable": probe["params_trainable"],
        "layers": probe["layers"],
        "weight_layers": probe["weight_layers"],
        "macs": probe["macs"],
        "size_mb": _mb(probe["size_bytes"]),
        "memory_mb": _mb(probe["memory_bytes"]),
        "memory_batch_mb": _mb(probe["memory_batch_bytes"]),
        "note": probe.get("weights_note") or "",
    }


def _timing_figures(latency: Timing, per_batch: Timing, batch: int) -> dict[str, Any]:
    """Timings in the row's units: ms at batch 1, images/s at ``batch`` (the fastest pass beside the median)."""
    return {
        "latency_ms": _ms(latency.median),
        "latency_p25_ms": _ms(latency.p25),
        "latency_p75_ms": _ms(latency.p75),
        "latency_min_ms": _ms(latency.minimum),
        "latency_repeats": latency.repeats,
        "throughput": _rate(batch, per_batch.median),
        "throughput_p25": _rate(batch, per_batch.p75),
        "throughput_p75": _rate(batch, per_batch.p25),
        "throughput_max": _rate(batch, per_batch.minimum),
        "throughput_repeats": per_batch.repeats,
    }


def open_row(name: str, settings: CompareSettings, threads: int) -> tuple[dict[str, Any], Probe | None]:
    """One model's row with its static figures and cited ImageNet top-1 (or the reason it has none),
    and its probe, open for timing (None when the model could not be measured)."""
    row: dict[str, Any] = {"model": name}
    try:
        resolved = resolve_name(name)
    except CnnlabError as exc:  # "unknown model 'x'; did you mean ...?"
        return {**row, "status": "error", "note": str(exc)}, None
    row["resolved"] = resolved
    cited = imagenet_top1(resolved)
    if cited is not None:
        row.update(imagenet_top1=cited.top1, imagenet_weights=cited.weights, imagenet_px=cited.image_size)
    spec = ProbeSpec(
        name,
        settings.image_size,
        settings.batch_size,
        threads,
        settings.repeats,
        settings.max_seconds,
        settings.channels_last,
        settings.pretrained,
        settings.weights.get(name),
    )
    probe = open_probe(spec, settings.isolate)
    if "error" in probe.figures:
        probe.close()
        return {**row, "status": "error", "note": probe.figures["error"]}, None
    return {**row, **_figures(probe.figures)}, probe


def _timer(name: str, probe: Probe, kind: str, failures: dict[str, str]) -> Callable[[int], list[float]]:
    """Times ``n`` passes of one model; a probe that dies is noted once and timed no more."""

    def run(count: int) -> list[float]:
        if name in failures:
            return []
        try:
            return probe.time(kind, count)
        except CnnlabError as exc:
            failures[name] = str(exc)
            return []

    return run


def time_rows(rows: list[dict[str, Any]], probes: dict[str, Probe], settings: CompareSettings) -> str | None:
    """Times every open probe in turns (latency, then throughput) into its row.

    Returns:
        None on a quiet machine, else why the times are not to be trusted ("rerun").
    """
    sampler = CpuSampler()  # other processes' use over the whole timing (the probes count as ours)
    failures: dict[str, str] = {}
    timings = {
        kind: time_interleaved(
            {name: _timer(name, probe, kind, failures) for name, probe in probes.items()},
            settings.repeats,
            settings.max_seconds,
        )
        for kind in ("latency", "batch")
    }
    others = sampler.others()
    for row in rows:
        name = row["model"]
        if name in failures:
            row.update(status="error", note=f"{row['note']}; {failures[name]}" if row.get("note") else failures[name])
        elif name in probes and name in timings["latency"] and name in timings["batch"]:
            row.update(_timing_figures(timings["latency"][name], timings["batch"][name], settings.batch_size))
    return busy_machine(others, timings["latency"])


def busy_machine(others: float | None, latency: Mapping[str, Timing]) -> str | None:
    """Why timings taken while other processes ran are not to be trusted, or None on a quiet machine."""
    busy = busy_while_timed(others)
    if busy:
        return busy
    noisy = [
        name for name, timing in latency.items() if timing.median > BUSY_MIN_SECONDS and timing.spread > BUSY_SPREAD
    ]
    if noisy:
        return f"the batch-1 times of {', '.join(noisy)} spread by more than {BUSY_SPREAD:.0%} of their median"
    return None


def _check_weights(models: list[str], weights: Mapping[str, str]) -> None:
    for name in weights:
        if name not in models:
            raise CnnlabError(
                f"--weights names '{name}', which is not among the compared models "
                f"({', '.join(models)}); write MODEL=FILE with a compared model"
            )


def _add_note(row: dict[str, Any], note: str) -> None:
    row["note"] = f"{row['note']}; {note}" if row.get("note") else note


def _train_rows(
    rows: list[dict[str, Any]], config: RunConfig, settings: CompareSettings, folder: Path, command: str
) -> str | None:
    """Trains every measured model the same way, adding test accuracy and times to its row.

    Returns:
        None, or the run folder Ctrl-C stopped (the models after it are left untrained).
    """
    measured = [row for row in rows if row["status"] == "ok"]
    for index, row in enumerate(measured, 1):
        pretrained = row["weights"] == "ImageNet"  # as measured: loaded, or why not in the row's note
        log.info("training %s (%d of %d)", row["model"], index, len(measured))
        try:
            row.update(
                train_model(
                    config,
                    row["model"],
                    _folder_name([row["model"]]),
                    pretrained,
                    settings.weights.get(row["model"]),
                    folder / "runs",
                    command,
                )
            )
        except TrainingInterrupted as stop:  # its result is None when stopped between epochs: files is always set
            _add_note(row, f"training interrupted: cnnlab train --resume {stop.files.root}")
            return str(stop.files.root)
        if row.get("train_error"):
            _add_note(row, f"training: {row.pop('train_error')}")
        notes = row.pop("run_notes", "")
        if notes:
            _add_note(row, notes)
    return None


def compare_architectures(
    models: list[str],
    settings: CompareSettings,
    command: str,
    out: Path | None = None,
    train_config: RunConfig | None = None,
) -> Comparison:
    """Measures (and, given ``train_config`` with data, trains) each model; writes the comparison.

    Args:
        out: the comparison folder (default: a new ``comparisons/<models>`` folder).
        train_config: options for training every model the same way (``build_config`` output);
            its image size is replaced by ``settings.image_size``. None: measure only.

    Raises:
        CnnlabError: no model named, bad options or data (before anything is measured).
    """
    names = list(dict.fromkeys(models))
    if not names:
        raise CnnlabError("name at least one model to compare, e.g. cnnlab compare resnet50 mobilenetv2")
    _check_weights(names, settings.weights)
    threads = choose(settings.threads or 0).threads  # the thread policy's count, the same for every model
    config, counts = None, None
    if train_config is not None:
        config = merge_config(train_config, {"data": {"image_size": settings.image_size}}, where="the comparison")
        counts = split_counts(config)  # bad data stops here, before minutes of measuring
    folder = Path(out) if out is not None else claim_folder(DEFAULT_FOLDER, _folder_name(names), "comparison", "--out")
    try:
        folder.mkdir(parents=True, exist_ok=True)  # before minutes of measuring: a bad --out fails now
    except OSError as exc:
        raise CnnlabError(
            f"cannot use '{folder}' as the comparison folder ({exc.strerror}); pick another --out"
        ) from None
    rows, probes = [], {}
    try:
        for index, name in enumerate(names, 1):
            log.info("measuring %s (%d of %d)", name, index, len(names))
            row, probe = open_row(name, settings, threads)
            rows.append(row)
            if probe is not None:
                probes[name] = probe
        began = time.perf_counter()
        busy = time_rows(rows, probes, settings)
        if probes:
            log.info("timed %d models in turns in %.1f s", len(probes), time.perf_counter() - began)
    finally:
        for probe in probes.values():
            probe.close()
    if busy:
        log.warning("measured on a busy machine: %s; rerun when it is quiet to rank the models by speed", busy)
    comparison = Comparison(
        folder, rows, settings, threads, command, machine_line(threads), how_measured(settings, threads), busy=busy
    )
    if config is not None and counts is not None:
        comparison.same_way = same_way(config, counts, settings.pretrained or bool(settings.weights))
        comparison.interrupted = _train_rows(rows, config, settings, folder, command)
    comparison.files = write_outputs(comparison)  # also after Ctrl-C: what was done is kept
    return comparison
