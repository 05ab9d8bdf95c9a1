"""Which runtime ``predict`` picks for a run: the fastest measured that keeps accuracy."""

from __future__ import annotations

import json
from pathlib import Path

from cnnlab.deploy.runtime import fastest_runtime
from cnnlab.training.run_dir import RunFiles


def _run(tmp_path: Path, latency: dict, accuracy: dict, artifacts: tuple[str, ...]) -> RunFiles:
    files = RunFiles(tmp_path)
    for name in artifacts:
        (tmp_path / name).write_bytes(b"x")
    speed = {"measured_by": "cnnlab benchmark", "latency_ms": latency, "accuracy": accuracy}
    files.deploy_meta.write_text(json.dumps({"speed": speed}))
    return files


def test_the_fastest_runtime_that_keeps_accuracy_is_chosen(tmp_path) -> None:
    latency = {"pytorch": 20.0, "onnx": 9.0, "int8": 4.0}
    files = _run(tmp_path, latency, {"pytorch": 0.95, "onnx": 0.95, "int8": 0.948},
                 ("model.onnx", "model.int8.onnx"))
    assert fastest_runtime(files)[0] == "int8"
    files = _run(tmp_path, latency, {"pytorch": 0.95, "onnx": 0.95, "int8": 0.93}, ("model.onnx", "model.int8.onnx"))
    assert fastest_runtime(files)[0] == "onnx"  # INT8 lost 2 points: never picked by itself
    (tmp_path / "model.onnx").unlink()
    (tmp_path / "model.int8.onnx").unlink()
    assert fastest_runtime(files)[0] == "pytorch"  # measured artifacts that are gone do not count


def test_without_measurements_an_exported_model_is_preferred(tmp_path) -> None:
    files = RunFiles(tmp_path)
    assert fastest_runtime(files)[0] == "pytorch"
    (tmp_path / "model.onnx").write_bytes(b"x")
    runtime, why = fastest_runtime(files)
    assert runtime == "onnx" and "cnnlab benchmark" in why
