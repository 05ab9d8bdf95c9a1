"""One model measured in a fresh Python process, so no model's memory or threads touch another's.

The parent opens a probe per model (:func:`open_probe`); the child (``python -m
cnnlab.comparison.probe``) reads the :class:`ProbeSpec` as a JSON line on stdin, builds the model,
measures its static figures (``cnnlab.comparison.measure``) and answers with one JSON line: the
figures, or ``{"error": "..."}`` with the reason. It then times forward passes in the blocks the
parent asks for, so the parent can interleave every model's timing over rounds (``timing``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
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
    return CnnlabError(
        f"'{spec.name}' cannot take {spec.image_size}x{spec.image_size} px images ({first}); use a larger --image-size"
    )


class Measured:
    """One model built and measured, ready to time its forward passes on request.

    The static figures (parameters, layers, MACs, size, memory) are measured at construction;
    :meth:`time` times passes in blocks, so the caller can interleave models over rounds and a
    burst of load from another process falls on every model alike.
    """

    def __init__(self, spec: ProbeSpec) -> None:
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
            for _ in range(3):  # warm-up: first passes pick kernels and fill caches
                model(one)
            model(batch)
        self._calls: dict[str, Callable[[], Any]] = {"latency": lambda: model(one), "batch": lambda: model(batch)}
        self.figures: dict[str, Any] = {
            "weights": weights,
            "weights_note": note,
            "params_total": total,
            "params_trainable": trainable,
            "layers": layers,
            "weight_layers": weight_layers,
            "macs": macs,
            "size_bytes": size_bytes,
            "memory_bytes": memory,
            "memory_batch_bytes": memory_batch,
            "build_seconds": round(time.perf_counter() - started, 2),
        }

    def time(self, kind: str, count: int) -> list[float]:
        """Seconds of each of ``count`` forward passes: ``latency`` (batch 1) or ``batch``."""
        import torch

        call, times = self._calls[kind], []  # call: a forward pass on a kept input
        with torch.inference_mode():
            for _ in range(count):
                began = time.perf_counter()
                call()
                times.append(time.perf_counter() - began)
        return times

    def close(self) -> None:
        self._calls.clear()


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, CnnlabError):
        return {"error": str(exc)}
    return {"error": f"measuring failed: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}"}


class LocalProbe:
    """A model measured in this process: starts faster, but its memory figures include what the
    models before it left allocated. Torch's thread count is the spec's only while it measures."""

    def __init__(self, spec: ProbeSpec) -> None:
        self.threads = spec.threads
        self.measured: Measured | None = None
        with self._threads_set():
            try:
                self.measured = Measured(spec)
                self.figures = self.measured.figures
            except (CnnlabError, MemoryError, RuntimeError) as exc:  # out of memory at batch N, mostly
                self.figures = _failure(exc)

    @contextlib.contextmanager
    def _threads_set(self) -> Iterator[None]:
        import torch

        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            torch.set_num_threads(saved)

    def time(self, kind: str, count: int) -> list[float]:
        assert self.measured is not None, "no timing for a model that could not be measured"
        with self._threads_set():
            return self.measured.time(kind, count)

    def close(self) -> None:
        if self.measured is not None:
            self.measured.close()
            self.measured = None


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_SRC), *filter(None, [env.get("PYTHONPATH")])])
    return env


class ChildProbe:
    """A model measured in a fresh Python process, so no model's memory or threads touch another's.

    The child reads the spec, then commands, as JSON lines on stdin and answers each with one
    JSON line on stdout: the static figures (or ``{"error": ...}``), then the times asked for.
    """

    def __init__(self, spec: ProbeSpec) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-m", "cnnlab.comparison.probe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=_child_env(),
        )
        self.figures = self._ask(asdict(spec))

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        try:
            assert self._child.stdin is not None and self._child.stdout is not None
            self._child.stdin.write(json.dumps(message) + "\n")
            self._child.stdin.flush()
            line = self._child.stdout.readline()
            if line:
                answer: dict[str, Any] = json.loads(line)
                return answer
        except (OSError, ValueError):  # the child died mid-answer
            pass
        return {"error": self._death()}

    def _death(self) -> str:
        code = self._child.wait()
        if code < 0:
            name = signal.Signals(-code).name
            hint = " (out of memory? try a smaller --batch-size)" if code == -signal.SIGKILL else ""
            return f"the measuring process was stopped by {name}{hint}"
        return f"the measuring process failed with exit code {code} (see the messages above)"

    def time(self, kind: str, count: int) -> list[float]:
        answer = self._ask({"time": kind, "count": count})
        if "error" in answer:
            raise CnnlabError(answer["error"])
        return list(answer["times"])

    def close(self) -> None:
        if self._child.poll() is None:
            try:
                assert self._child.stdin is not None
                self._child.stdin.close()  # end of commands: the child exits
                self._child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self._child.kill()
                self._child.wait()


def open_probe(spec: ProbeSpec, isolate: bool = True) -> ChildProbe | LocalProbe:
    """The model of ``spec`` built and its static figures measured, in a child process or here."""
    return ChildProbe(spec) if isolate else LocalProbe(spec)


def measure_model(spec: ProbeSpec, repeats: int | None = None) -> dict[str, Any]:
    """Builds and measures one model in this process (static figures, then timings, one after the other).

    Raises:
        CnnlabError: unknown model, unusable weights file, or an input the model cannot take.
    """
    from cnnlab.comparison.measure import Timing

    measured = Measured(spec)
    count = repeats or spec.repeats
    return {
        **measured.figures,
        "latency": Timing.of(measured.time("latency", count)).as_dict(),
        "batch_seconds": Timing.of(measured.time("batch", count)).as_dict(),
    }


def main() -> int:
    """The child: a spec, then ``{"time": kind, "count": n}`` commands, each answered on one line."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    measured = None
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if measured is None:
                measured = Measured(ProbeSpec(**message))
                answer: dict[str, Any] = measured.figures
            else:
                answer = {"times": measured.time(message["time"], int(message["count"]))}
        except (CnnlabError, MemoryError, RuntimeError) as exc:
            answer = _failure(exc)
        print(json.dumps(answer), flush=True)
        if "error" in answer and measured is None:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
