"""What one network costs, measured: layers, multiply-accumulates, file size, time and memory.

Every figure comes from running or saving the real model: MACs from PyTorch's own operation
counter over one forward pass, the size from a real safetensors file, times from repeated
forward passes under ``torch.inference_mode``, memory from the process's resident set size.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.machine import status_kib

# What torch.utils.flop_counter.FlopCounterMode counts, for the output's "how measured" notes.
MAC_OPERATIONS = (
    "convolutions (aten.convolution, grouped and depthwise included), matrix products "
    "(aten.mm, addmm, bmm, baddbmm: linear layers) and attention; not counted: "
    "bias additions, normalisation, activations, pooling, element-wise additions"
)
LAYER_COUNTING = (
    "modules holding weights (convolution, linear, normalisation), and in brackets the "
    "convolution and linear layers among them, which an architecture's name counts (VGG16: 16). "
    "Keras' model.layers also counts parameter-free layers (input, activations, pooling, "
    "padding, add), so its numbers are higher: the lesson's figures are Keras'"
)
_WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_layers(model: nn.Module) -> tuple[int, int]:
    """(modules holding parameters of their own, convolution + linear layers among them)."""
    with_params = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    return len(with_params), sum(isinstance(m, _WEIGHT_LAYERS) for m in with_params)


@torch.inference_mode()
def count_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``x``: FlopCounterMode's FLOPs / 2.

    FlopCounterMode counts 2 FLOPs per multiply-accumulate of the operations in
    :data:`MAC_OPERATIONS`, from the real shapes of this pass.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    return counter.get_total_flops() // 2


def size_on_disk(model: nn.Module) -> int:
    """Bytes of the model's state dict saved as a safetensors file (weights in their own dtype)."""
    from safetensors.torch import save_model

    with tempfile.TemporaryDirectory(prefix="cnnlab-size-") as folder:
        path = Path(folder) / "model.safetensors"
        save_model(model, str(path))  # drops tied duplicates, as a real export does
        return path.stat().st_size


@dataclass(frozen=True)
class Timing:
    """Seconds per call over the timed repeats: median, interquartile range and the fastest.

    The fastest (and the lower quartile) are the robust figures on a shared machine: another
    process can only slow a pass down, never speed it up.
    """

    median: float
    p25: float
    p75: float
    repeats: int
    minimum: float

    @classmethod
    def of(cls, times: Sequence[float]) -> Timing:
        if len(times) == 1:
            return cls(times[0], times[0], times[0], 1, times[0])
        quartiles = statistics.quantiles(times, n=4, method="inclusive")
        return cls(statistics.median(times), quartiles[0], quartiles[2], len(times), min(times))

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: 0.1 is steady, above 0.5 something else ran."""
        return (self.p75 - self.p25) / self.median if self.median > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_calls(
    call: Callable[[], Any], repeats: int, max_seconds: float, warmup: int = 2, min_repeats: int = 3
) -> Timing:
    """Times ``call`` after ``warmup`` untimed calls: ``repeats`` times, or fewer (never under
    ``min_repeats``) once ``max_seconds`` have passed, so a large model is timed in bounded time."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max(repeats, 1) and (len(times) < min_repeats or time.perf_counter() - started < max_seconds):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return Timing.of(times)


ROUNDS = 5  # blocks per model: a burst of load that lasts a block falls on one model's block of five


def time_interleaved(
    timers: Mapping[str, Callable[[int], list[float]]],
    repeats: int,
    max_seconds: float,
    rounds: int = ROUNDS,
    min_repeats: int = 3,
) -> dict[str, Timing]:
    """Times every model in turns: ``rounds`` rounds, each a block of passes per model, the order
    rotating, so load from another process that comes and goes falls on all models alike.

    Args:
        timers: per model, a function that times ``n`` passes and returns their seconds.
        repeats: passes per model in all; a model stops early (never under ``min_repeats``)
            once its passes took ``max_seconds``, so a large model is timed in bounded time.
    """
    names = list(timers)
    block = max(1, math.ceil(repeats / rounds))
    times: dict[str, list[float]] = {name: [] for name in names}
    for turn in range(max(rounds, math.ceil(repeats / block))):
        order = names[turn % len(names) :] + names[: turn % len(names)] if names else []
        for name in order:
            done = times[name]
            if len(done) >= repeats or (len(done) >= min_repeats and sum(done) >= max_seconds):
                continue
            done += timers[name](min(block, repeats - len(done)))
    return {name: Timing.of(done) for name, done in times.items() if done}


def _reset_peak_rss() -> bool:
    """Resets the process's peak resident set size to the current one (Linux 4.0 and later)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_memory_growth(call: Callable[[], Any], baseline_kib: int | None) -> int | None:
    """Bytes by which the resident set size peaked above ``baseline_kib`` while ``call`` ran.

    The peak is the kernel's high-water mark (``VmHWM``), reset just before the call, so it sees
    every allocation (PyTorch's, oneDNN's, the allocator's) at its highest. None where the
    kernel offers no resettable peak (not Linux).
    """
    if baseline_kib is None or not _reset_peak_rss():
        return None
    call()
    peak = status_kib("VmHWM")
    return None if peak is None else max(0, peak - baseline_kib) * 1024


def resident_kib() -> int | None:
    """The process's resident set size now, in KiB (None off Linux)."""
    return status_kib("VmRSS")
