"""``cnnlab quantize``: post-training static INT8 with ONNX Runtime, calibrated on training images.

The settings are the fastest of a search on this CPU (BENCHMARKS.md, "INT8 settings"): QDQ format,
per-channel weights (per-tensor lost ~5 points on Lite0's depthwise convs), unsigned 8-bit
activations with signed 8-bit weights (2.2x over FP32 on EfficientNet-Lite0 at batch 1, where
ONNX Runtime's default signed activations gave 1.3x: they leave convs after residual Adds in
float), no reduce_range (no gain with VNNI, lower agreement), MinMax calibration (Entropy and
Percentile scored within noise and took 3-7x longer). The graph ONNX Runtime actually runs is
inspected: a model is called INT8 only if integer operators (QLinearConv, QGemm...) do the work.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.deploy.benchmark import measure_served, normalized, sample, speed_columns, speed_record, speed_rows
from cnnlab.deploy.export import Export, export_model
from cnnlab.deploy.runtime import ONNX_KEY, model_metadata, open_runtime, ort_session, torch_threads, update_sidecar
from cnnlab.deploy.settings import ACCURACY_TOLERANCE, CALIBRATION_IMAGES, DEFAULT_THREADS, RUNTIMES, QuantizeOptions
from cnnlab.errors import CnnlabError, plural
from cnnlab.evaluation.report import write_report
from cnnlab.evaluation.run_evaluation import run_data
from cnnlab.tables import Table
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.run_dir import RunFiles, open_run

log = logging.getLogger("cnnlab")
CALIBRATION_BATCH = 8
FLOAT_COMPUTE = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the operators INT8 is meant to replace
INTEGER_COMPUTE = ("QGemm", "ConvInteger", "MatMulInteger", "QAttention")  # besides every QLinear* op


def is_integer_op(op: str) -> bool:
    return op.startswith("QLinear") or op in INTEGER_COMPUTE


@dataclass
class Quantized:
    """What ``quantize`` wrote, what runs in it, and the before/after table."""

    path: Path
    ops: dict[str, int]  # operator counts of the graph ONNX Runtime runs, after its fusions
    table: Table
    warnings: list[str]
    exported: Export | None  # model.onnx, when it had to be exported first


def operator_counts(path: Path) -> dict[str, int]:
    """Operator types of the graph ONNX Runtime runs for ``path`` (after its fusions)."""
    import onnx

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "optimized.onnx"
        ort_session(path, 1, optimized_copy=optimized)
        graph = onnx.load(str(optimized), load_external_data=False).graph
    return dict(collections.Counter(node.op_type for node in graph.node).most_common())


def describe_ops(ops: dict[str, int]) -> str:
    """'QLinearConv 49, QLinearAdd 9, QGemm 1 integer; 0 float Conv/Gemm/MatMul'."""
    integer = ", ".join(f"{op} {n}" for op, n in ops.items() if is_integer_op(op))
    floats = {op: n for op, n in ops.items() if op in FLOAT_COMPUTE}
    left = ", ".join(f"{op} {n}" for op, n in floats.items()) or "none"
    return f"{integer or 'none'} (integer); float compute left: {left}"


def calibration_set(train: ImageSet, count: int, normalize: Normalize, seed: int) -> np.ndarray:
    """``count`` training images (a seeded random draw), as the float input the model takes."""
    return normalized(sample(train.images, count, seed), normalize, count).numpy()


def _reader(images: np.ndarray, input_name: str) -> Any:  # an onnxruntime CalibrationDataReader
    """Calibration batches; ``set_range``/``len`` let ONNX Runtime reduce ranges a few batches at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = [images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)]
            self.set_range(0, len(self.batches))

        def __len__(self) -> int:
            return len(self.batches)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.pending = iter(self.batches[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.pending, None)
            return None if batch is None else {input_name: batch}

    return Batches()


def _stride(batches: int, most: int = 4) -> int:
    """Batches whose activations are held at once while calibrating: a divisor of the count (ONNX
    Runtime requires one), at most ``most``, so memory stays bounded (Lite0: ~40 MB per image)."""
    return max(d for d in range(1, most + 1) if batches % d == 0)


# The settings the search on this CPU chose (module docstring); benchmarks pass others to compare.
SETTINGS = {
    "quant_format": "QDQ",
    "per_channel": True,
    "reduce_range": False,
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "calibrate_method": "MinMax",
}


def quantize_file(source: Path, target: Path, images: np.ndarray, meta: dict[str, object], **settings: object) -> None:
    """Static INT8 of ``source`` into ``target``, with :data:`SETTINGS` unless ``settings`` override
    them (by name: ``activation_type="QInt8"``, ``quant_format="QOperator"``...)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    chosen: dict[str, Any] = {**SETTINGS, **settings}
    enums = {
        "quant_format": QuantFormat,
        "activation_type": QuantType,
        "weight_type": QuantType,
        "calibrate_method": CalibrationMethod,
    }
    options = {k: getattr(enums[k], v) if k in enums else v for k, v in chosen.items()}

    with tempfile.TemporaryDirectory(dir=target.parent) as folder:
        prepared = Path(folder) / "prepared.onnx"
        try:  # shape inference + constant folding; it changed neither speed nor accuracy, but quiets warnings
            quant_pre_process(str(source), str(prepared))
        except Exception as exc:  # noqa: BLE001  symbolic shape inference fails on some graphs: quantize as exported
            log.info("quantization pre-processing skipped (%s)", type(exc).__name__)
            prepared = source
        input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
        reader = _reader(images, input_name)
        # (CalibMaxIntermediateOutputs would bound memory too, but ORT 1.32's MinMax drops the data it clears.)
        quantize_static(
            str(prepared), str(target), reader, **options, extra_options={"CalibStridedMinMax": _stride(len(reader))}
        )
    graph = onnx.load(str(target))
    props = {p.key: p.value for p in graph.metadata_props}
    props[ONNX_KEY] = json.dumps(meta)
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(target))


HOW_QUANTIZED = "QDQ, per-channel QInt8 weights, QUInt8 activations, MinMax"  # what quantize_file asks of ONNX Runtime


def quantize_model(
    files: RunFiles,
    trained: TrainedModel,
    data: PreparedData,
    calibration: int = CALIBRATION_IMAGES,
    threads: int = DEFAULT_THREADS,
    seed: int = 0,
) -> Quantized:
    """Writes ``model.int8.onnx`` and the FP32/INT8 table; exports ``model.onnx`` first if needed.

    Raises:
        CnnlabError: when the INT8 graph would not run integer operators (nothing is written).
    """
    import torch

    exported = None if files.onnx.is_file() else export_model(files, trained, data, "onnx", threads=threads)
    images = calibration_set(data.splits["train"], calibration, trained.normalize, seed)
    meta = {
        **model_metadata(trained, files),
        "quantized": True,
        "calibration": {"split": "train", "images": len(images)},
    }
    ops = _write_int8(files, images, meta)
    test = data.splits["test"]
    with torch_threads(threads):
        threads = torch.get_num_threads()  # the count asked for, or the thread policy's (0 means auto)
        served = {runtime: open_runtime(files, runtime, threads, trained) for runtime in ("pytorch", "onnx", "int8")}
        results = measure_served(served, test)
    fp32, int8 = results["onnx"], results["int8"]
    speedup = fp32["timing"].p50_ms / int8["timing"].p50_ms
    drop = fp32["accuracy"] - int8["accuracy"]
    warnings = _int8_warnings(speedup, drop)
    notes = [
        f"quantized operators ONNX Runtime runs: {describe_ops(ops)}",
        f"calibrated on {len(images)} training images (never test images); {HOW_QUANTIZED}",
        f"{plural(threads, 'thread')}; {len(test)} test images",
        *warnings,
    ]
    speed = speed_record(results, threads, "cnnlab quantize")
    table = Table(
        f"INT8 quantization of {files.root.name}",
        speed_columns(RUNTIMES["onnx"]),
        speed_rows(results, "onnx", {name: RUNTIMES[name] for name in served}),
        notes,
        {**speed, "ops": ops, "int8_speedup": speedup, "int8_accuracy_drop": drop},
    )
    table.save(files.tables, "quantize")
    record = {
        "runtime": "int8",
        "size_mb": round(files.int8_onnx.stat().st_size / 1e6, 3),
        "operators": ops,
        "calibration": meta["calibration"],
        "accuracy_drop": drop,
        "speedup_vs_fp32": round(speedup, 3),
    }
    update_sidecar(files, trained, {files.int8_onnx.name: record}, speed)
    write_report(files.root)
    return Quantized(files.int8_onnx, ops, table, warnings, exported)


def _write_int8(files: RunFiles, images: Any, meta: dict[str, Any]) -> dict[str, int]:
    """Quantizes ``model.onnx`` into ``model.int8.onnx``; its operator counts.

    Written beside it and renamed only once it holds integer operators, so a failed quantization
    leaves no INT8 file that predict would pick up.

    Raises:
        CnnlabError: the graph has no integer operator (nothing is written).
    """
    temporary = files.int8_onnx.with_name(f".model.{os.getpid()}.tmp.int8.onnx")
    try:
        quantize_file(files.onnx, temporary, images, meta)
        ops = operator_counts(temporary)
        if not any(is_integer_op(op) for op in ops):
            raise CnnlabError(
                f"quantization left no integer operator in the graph ({describe_ops(ops)}); "
                f"{files.int8_onnx.name} was not written: this model is not INT8"
            )
        os.replace(temporary, files.int8_onnx)
    finally:
        temporary.unlink(missing_ok=True)
    return ops


def _int8_warnings(speedup: float, drop: float) -> list[str]:
    """What speaks against using INT8 (logged, and in the table's notes)."""
    warnings = []
    if speedup < 1:
        warnings.append(f"INT8 is slower than FP32 here ({speedup:.2f}x at batch 1): keep model.onnx")
    if drop > ACCURACY_TOLERANCE:
        warnings.append(f"INT8 loses {100 * drop:.1f} points of test accuracy (more than 1): predict keeps FP32")
    for warning in warnings:
        log.warning(warning)
    return warnings


def quantize_run(run: str | Path, options: QuantizeOptions) -> Quantized:
    """``cnnlab quantize RUN``: ``RUN/model.int8.onnx`` and its table against PyTorch and ONNX FP32."""
    files = open_run(run)
    trained = load_trained(files)
    return quantize_model(files, trained, run_data(files, trained), options.calibration, options.threads)
