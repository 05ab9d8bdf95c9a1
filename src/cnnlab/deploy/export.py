"""``cnnlab export``: a run's model as ONNX or TorchScript, checked against the checkpoint on real images.

ONNX uses torch's dynamo exporter (torch >= 2.9's default) with a dynamic batch and the weights
inside the one file; it specialises the image size, which turns timm's "same" padding into
plain Conv pads (EfficientNet-Lite0: 49 Conv, no Shape/Gather/Pad subgraphs). Should it fail
for some model, the TorchScript-based exporter is tried. Classes and preprocessing go into the
file (ONNX metadata, a TorchScript extra file) and into ``model.json`` beside it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.types import PreparedData
from cnnlab.deploy.benchmark import normalized, time_models
from cnnlab.deploy.runtime import (
    ONNX_KEY,
    TORCHSCRIPT_EXTRA,
    model_metadata,
    open_artifact,
    open_runtime,
    read_sidecar,
    torch_threads,
    update_sidecar,
)
from cnnlab.deploy.settings import DEFAULT_THREADS, PARITY_TOLERANCE, RUNTIMES, ExportFormat, ExportOptions
from cnnlab.errors import CnnlabError
from cnnlab.evaluation.run_evaluation import run_data
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.run_dir import RunFiles, open_run

log = logging.getLogger("cnnlab")
Format = ExportFormat  # declared with --format in deploy/settings.py
PARITY_IMAGES = 64
MAX_BATCH = 4096  # the dynamic batch's upper bound in the ONNX graph


@dataclass
class Export:
    """What ``export`` wrote and checked."""

    path: Path
    runtime: str
    seconds: float
    parity: dict[str, Any]
    latency_ms: dict[str, float]


def parity_images(data: PreparedData, count: int = PARITY_IMAGES) -> torch.Tensor:
    """Real images of the run's data (validation first, then test): uint8 (N, C, H, W)."""
    pool = torch.cat([data.splits["val"].images, data.splits["test"].images])
    return pool[:count]


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporters' progress lines and warnings are kept off the console (errors still raise)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> str:
    """Writes ``path``; returns which exporter did it."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with _quiet():
            program = torch.onnx.export(
                model,
                (example,),
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=({0: batch},),
                dynamo=True,
            )
            assert program is not None  # dynamo=True returns the program
            program.model.metadata_props[ONNX_KEY] = json.dumps(meta)
            program.save(str(path), external_data=False)  # one file: no model.onnx.data sidecar
        return "dynamo"
    except Exception as exc:  # noqa: BLE001  the exporter raises many kinds; the legacy one still handles most models
        log.info("dynamo ONNX export failed (%s); trying the TorchScript-based exporter", type(exc).__name__)
    import onnx

    try:
        with _quiet():
            torch.onnx.export(
                model,
                (example,),
                str(path),
                input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                dynamo=False,
                opset_version=17,
            )
    except Exception as exc:  # noqa: BLE001  the exporter fails in many ways on unsupported models
        raise CnnlabError(
            f"this model cannot be exported to ONNX ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:120]}); try --format torchscript"
        ) from None
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {ONNX_KEY: json.dumps(meta)})
    onnx.save(graph, str(path))
    return "legacy"


def _export_torchscript(model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict[str, Any]) -> str:
    try:
        with _quiet():  # torch.jit is deprecated in favour of torch.export, but still the one format C++/mobile load
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(meta)})
    except Exception as exc:  # noqa: BLE001  tracing fails in many ways on unsupported models
        raise CnnlabError(
            f"this model cannot be traced to TorchScript ({type(exc).__name__}); use --format onnx"
        ) from None
    return "torch.jit.trace"


def check_parity(reference: torch.nn.Module, candidate: torch.nn.Module, inputs: torch.Tensor) -> dict[str, Any]:
    """Max |logit difference| and top-1 agreement on ``inputs``, one batch and image by image (a
    static batch or a batch-dependent graph would fail one of the two)."""
    with torch.inference_mode():
        ref = reference(inputs).float()
        whole = candidate(inputs).float()
        singles = torch.cat([candidate(inputs[i : i + 1]).float() for i in range(min(8, len(inputs)))])
    diff = max(float((whole - ref).abs().max()), float((singles - ref[: len(singles)]).abs().max()))
    agree = (
        float((whole.argmax(1) == ref.argmax(1)).float().mean())
        if ref.shape[1] > 1
        else float(((whole > 0) == (ref > 0)).float().mean())
    )
    return {
        "images": len(inputs),
        "max_abs_diff": diff,
        "top1_agreement": agree,
        "max_abs_logit": float(ref.abs().max()),
    }


def export_model(
    files: RunFiles,
    trained: TrainedModel,
    data: PreparedData,
    fmt: Format = "onnx",
    tolerance: float = PARITY_TOLERANCE,
    threads: int = DEFAULT_THREADS,
) -> Export:
    """Exports the run's model to ``model.onnx`` or ``model.ts``, only if it matches the checkpoint.

    Raises:
        CnnlabError: when the artifact's logits differ by more than ``tolerance`` (it is not kept).
    """
    path = files.onnx if fmt == "onnx" else files.torchscript
    runtime = "onnx" if fmt == "onnx" else "torchscript"
    model = trained.model.eval().to(memory_format=torch.contiguous_format)
    inputs = normalized(parity_images(data), trained.normalize, PARITY_IMAGES)
    example = inputs[:2] if len(inputs) >= 2 else inputs.repeat(2, 1, 1, 1)  # batch 2: torch.export's 1 is special
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")  # the suffix tells its kind
    meta = model_metadata(trained, files)
    started = time.perf_counter()
    try:
        with torch_threads(max(threads, torch.get_num_threads())):
            how = (_export_onnx if fmt == "onnx" else _export_torchscript)(model, example, temporary, meta)
        seconds = time.perf_counter() - started
        with torch_threads(threads):
            served = open_artifact(temporary, threads)
            parity = _matching(check_parity(model, served.model, inputs), tolerance, path)
            eager = open_runtime(files, "pytorch", threads, trained).model  # as predict would run it
            timings = time_models(
                {"pytorch": (eager, inputs), runtime: (served.model, inputs)}, rounds=10, max_seconds=10
            )
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    latency = {name: round(t.p50_ms, 3) for name, t in timings.items()}
    record = {
        "runtime": runtime,
        "exporter": how,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "export_seconds": round(seconds, 2),
        "size_mb": round(path.stat().st_size / 1e6, 3),
        "parity": parity,
        "tolerance": tolerance,
    }
    update_sidecar(files, trained, {path.name: record}, _speed_after_export(files, threads, latency))
    return Export(path, runtime, seconds, parity, latency)


def _matching(parity: dict[str, Any], tolerance: float, path: Path) -> dict[str, Any]:
    """``parity``, when the artifact's logits are within ``tolerance`` of the checkpoint's.

    Raises:
        CnnlabError: they differ by more (the artifact is not kept).
    """
    if parity["max_abs_diff"] > tolerance:
        raise CnnlabError(
            f"the exported model differs from the checkpoint: max |logit difference| "
            f"{parity['max_abs_diff']:.2e} > --tolerance {tolerance:g} on {parity['images']} images "
            f"(top-1 agreement {parity['top1_agreement']:.1%}); {path.name} was not written"
        )
    return parity


def _speed_after_export(files: RunFiles, threads: int, latency: dict[str, float]) -> dict[str, Any]:
    """The run's speed record with export's quick timing added; a full benchmark's figures are kept."""
    speed = read_sidecar(files).get("speed") or {}
    if not speed or speed.get("measured_by") == "cnnlab export":
        old = speed.get("latency_ms") or {}
        speed = {
            "measured_by": "cnnlab export",
            "threads": threads,
            "latency_ms": {**old, **latency},
            "accuracy": speed.get("accuracy") or {},
        }
    return speed


def export_run(run: str | Path, options: ExportOptions) -> Export:
    """``cnnlab export RUN``: the run's checkpoint as ``RUN/model.onnx`` (or ``model.ts``)."""
    files = open_run(run)
    trained = load_trained(files)
    return export_model(files, trained, run_data(files, trained), options.format, options.tolerance, options.threads)


def describe(result: Export) -> str:
    """The lines ``cnnlab export`` prints."""
    p = result.parity
    pytorch, artifact = result.latency_ms.get("pytorch"), result.latency_ms.get(result.runtime)
    speed = (
        f"{artifact:.2f} ms per image vs {pytorch:.2f} ms in PyTorch ({pytorch / artifact:.1f}x)"
        if pytorch and artifact
        else ""
    )
    return "\n".join(
        [
            (
                f"wrote {result.path} ({result.path.stat().st_size / 1e6:.2f} MB, {RUNTIMES[result.runtime]}, "
                f"{result.seconds:.1f} s)"
            ),
            (
                f"parity on {p['images']} images of the run's data: max |logit difference| {p['max_abs_diff']:.2e}, "
                f"top-1 agreement {p['top1_agreement']:.1%}"
            ),
            f"speed at batch 1: {speed}",
        ]
    )
