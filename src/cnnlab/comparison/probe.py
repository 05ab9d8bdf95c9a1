"""One model measured in a fresh Python process, so no model's memory or threads touch another's.

The parent calls :func:`run_probe`; the child (``python -m cnnlab.comparison.probe``) reads the
:class:`ProbeSpec` as JSON on stdin, builds the model, measures it (``cnnlab.comparison.measure``)
and writes one JSON object on stdout: the figures, or ``{"error": "..."}`` with the reason.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError

IMAGENET_CLASSES = 1000  # measured with an ImageNet-sized head, as published figures are
_SRC = Path(__file__).resolve().parents[2]  # the folder holding this cnnlab: the child imports the same code


@dataclass(frozen=True)
class ProbeSpec:
    """What to measure: which model, at what input, with which weights, how long."""

    name: str
    image_size: int
    batch_size: int
    threads: int
    repeats: int
    max_seconds: float  # per timing: stop repeating after this long (at least 3 repeats)
    channels_last: bool
    pretrained: bool = False  # try ImageNet weights (built in, cached, or the hub); else random
    weights: str | None = None  # a local state dict file for this model


def _build(spec: ProbeSpec) -> tuple[Any, str, str | None]:
    """(model in eval mode, what its weights are, a note on why not ImageNet when asked)."""
    from cnnlab.models import create_model, resolve_name
    from cnnlab.models.registry import own_builder

    size = (spec.image_size, spec.image_size)
    common: dict[str, Any] = {"num_classes": IMAGENET_CLASSES, "in_chans": 3, "image_size": size, "dropout": 0.0}
    if spec.weights:  # a file the user named must load: its failure is the row's error
        return create_model(spec.name, weights=spec.weights, **common).eval(), f"file {Path(spec.weights).name}", None
    note = None
    if spec.pretrained and own_builder(resolve_name(spec.name)) is not None:
        note = "cnnlab's own CNN: no pretrained weights"
    elif spec.pretrained:
        try:
            return create_model(spec.name, pretrained=True, **common).eval(), "ImageNet", None
        except CnnlabError as exc:
            note = str(exc).split("; pass")[0]  # "could not get ImageNet weights for '...' (...; offline?)"
    return create_model(spec.name, **common).eval(), "random", note


def _too_small(spec: ProbeSpec, exc: Exception) -> CnnlabError:
    first = (str(exc).splitlines() or [type(exc).__name__])[0][:100]
    return CnnlabError(f"'{spec.name}' cannot take {spec.image_size}x{spec.image_size} px images ({first}); "
                       "use a larger --image-size")


def measure_model(spec: ProbeSpec) -> dict[str, Any]:
    """Builds and measures one model in this process; the figures as a JSON-ready dict.

    Memory is measured first, on cold forward passes (what a fresh deployment pays), then
    the file size, MACs, latency at batch 1 and throughput at ``batch_size``.

    Raises:
        CnnlabError: unknown model, unusable weights file, or an input the model cannot take.
    """
    import torch

    from cnnlab.comparison import measure
    from cnnlab.models.summary import count_parameters

    started = time.perf_counter()
    torch.set_num_threads(spec.threads)
    try:
        model, weights, note = _build(spec)
    except (RuntimeError, ValueError, AssertionError) as exc:  # own CNNs size their layers at build time
        raise _too_small(spec, exc) from None
    total, trainable = count_parameters(model)
    layers, weight_layers = measure.count_layers(model)
    layout = torch.channels_last if spec.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    one = torch.rand(1, 3, spec.image_size, spec.image_size).contiguous(memory_format=layout)
    batch = torch.rand(spec.batch_size, 3, spec.image_size, spec.image_size).contiguous(memory_format=layout)
    with torch.inference_mode():
        baseline = measure.resident_kib()  # model and inputs in memory, nothing run yet
        try:
            memory = measure.peak_memory_growth(lambda: model(one), baseline)
        except (RuntimeError, ValueError, AssertionError) as exc:  # e.g. a feature map shrunk to nothing
            raise _too_small(spec, exc) from None
        memory_batch = measure.peak_memory_growth(lambda: model(batch), baseline)
    size_bytes = measure.size_on_disk(model)  # after the memory figures: saving allocates too
    with torch.inference_mode():
        macs = measure.count_macs(model, one)
        latency = measure.time_calls(lambda: model(one), spec.repeats, spec.max_seconds, warmup=3)
        per_batch = measure.time_calls(lambda: model(batch), spec.repeats, spec.max_seconds, warmup=1)
    return {
        "weights": weights, "weights_note": note,
        "params_total": total, "params_trainable": trainable,
        "layers": layers, "weight_layers": weight_layers,
        "macs": macs, "size_bytes": size_bytes,
        "memory_bytes": memory, "memory_batch_bytes": memory_batch,
        "latency": latency.as_dict(), "batch_seconds": per_batch.as_dict(),
        "measure_seconds": round(time.perf_counter() - started, 2),
    }


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_probe(spec: ProbeSpec) -> dict[str, Any]:
    """Measures ``spec`` in a fresh process; ``{"error": reason}`` when it could not be measured."""
    child = subprocess.run([sys.executable, "-m", "cnnlab.comparison.probe"], input=json.dumps(asdict(spec)),
                           stdout=subprocess.PIPE, text=True, env=_child_env())
    lines = child.stdout.strip().splitlines()
    if lines:
        try:
            row: dict[str, Any] = json.loads(lines[-1])
            return row
        except ValueError:
            pass
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        hint = " (out of memory? try a smaller --batch-size)" if child.returncode == -signal.SIGKILL else ""
        return {"error": f"the measuring process was stopped by {name}{hint}"}
    return {"error": f"the measuring process failed with exit code {child.returncode} (see the messages above)"}


def measure_here(spec: ProbeSpec) -> dict[str, Any]:
    """:func:`measure_model` with its failures as ``{"error": reason}``, as :func:`run_probe` gives them."""
    import torch

    threads = torch.get_num_threads()
    try:
        return measure_model(spec)
    except CnnlabError as exc:
        return {"error": str(exc)}
    except (MemoryError, RuntimeError) as exc:  # out of memory at batch N, mostly
        return {"error": f"measuring failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
    finally:
        torch.set_num_threads(threads)


def main() -> int:
    """The child: spec on stdin, one JSON line on stdout."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    print(json.dumps(measure_here(ProbeSpec(**json.loads(sys.stdin.read())))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
