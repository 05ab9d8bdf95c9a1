"""Which runtime ``predict`` picks for a run: the fastest exact one, INT8 only when asked for."""

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


def test_auto_takes_the_fastest_exact_runtime_and_fastest_takes_int8_only_when_it_keeps_accuracy(tmp_path) -> None:
    latency = {"pytorch": 20.0, "onnx": 9.0, "int8": 4.0}
    files = _run(tmp_path, latency, {"pytorch": 0.95, "onnx": 0.95, "int8": 0.948}, ("model.onnx", "model.int8.onnx"))
    runtime, why = fastest_runtime(files)
    assert runtime == "onnx"  # the checkpoint's own outputs by default...
    assert "INT8 is faster (4.00 ms, -0.2 points of test accuracy)" in why and "--runtime fastest" in why  # ...said
    assert fastest_runtime(files, "fastest")[0] == "int8"  # speed when asked for
    files = _run(tmp_path, latency, {"pytorch": 0.95, "onnx": 0.95, "int8": 0.93}, ("model.onnx", "model.int8.onnx"))
    runtime, why = fastest_runtime(files, "fastest")
    assert runtime == "onnx" and "INT8 (4.00 ms) is left out: -2.0 points" in why  # lost 2 points: never picked
    (tmp_path / "model.onnx").unlink()
    (tmp_path / "model.int8.onnx").unlink()
    assert fastest_runtime(files, "fastest")[0] == "pytorch"  # measured artifacts that are gone do not count


def test_an_unknown_runtime_is_a_one_line_error_naming_the_choices(tmp_path) -> None:
    import pytest

    from cnnlab.deploy.runtime import open_for_prediction
    from cnnlab.errors import CnnlabError

    with pytest.raises(CnnlabError, match="unknown runtime 'int4'; choose from auto, fastest, pytorch"):
        open_for_prediction(tmp_path, "int4")


def test_without_measurements_an_exported_model_is_preferred(tmp_path) -> None:
    files = RunFiles(tmp_path)
    assert fastest_runtime(files)[0] == "pytorch"
    (tmp_path / "model.onnx").write_bytes(b"x")
    runtime, why = fastest_runtime(files)
    assert runtime == "onnx" and "cnnlab benchmark" in why
