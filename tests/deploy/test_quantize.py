"""``cnnlab quantize``: a real INT8 graph, calibrated on training images, close to FP32 on a tiny task."""

from __future__ import annotations

import json

import pytest

from conftest import unnamed_run_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: no OpenMP spin-waits


def test_int8_graph_runs_integer_operators_and_keeps_accuracy(cli, run_copy, trained_shapes, monkeypatch) -> None:
    code, out, err = cli("quantize", run_copy, "--calibration", "32", "--format", "json")
    assert code == 0, err
    table = json.loads(out)
    assert [row[0] for row in table["rows"]] == ["PyTorch eager", "ONNX Runtime FP32", "ONNX Runtime INT8"]
    ops = table["data"]["ops"]
    assert ops.get("QLinearConv", 0) == 2 and ops.get("QGemm", 0) == 2  # both convs and both dense layers
    assert not {"Conv", "Gemm", "MatMul"} & set(ops)  # nothing left computing in float
    assert table["data"]["int8_accuracy_drop"] <= 0.01
    assert table["data"]["threads"] >= 1  # the count used, not the asked-for 0 (auto)
    assert (run_copy / "model.onnx").is_file()  # exported first, with its parity check
    assert (run_copy / "model.int8.onnx").stat().st_size < 0.4 * (run_copy / "model.onnx").stat().st_size
    sidecar = json.loads((run_copy / "model.json").read_text())
    assert sidecar["artifacts"]["model.int8.onnx"]["calibration"] == {"split": "train", "images": 32}
    assert "Deployment" in (run_copy / "report.html").read_text()
    assert not unnamed_run_files(run_copy)
    # INT8 logits stay close to FP32's on the same images.
    import torch

    from cnnlab.deploy.export import check_parity
    from cnnlab.deploy.runtime import open_artifact

    x = torch.rand(16, 3, 20, 20)
    parity = check_parity(
        open_artifact(run_copy / "model.onnx").model, open_artifact(run_copy / "model.int8.onnx").model, x
    )
    assert parity["top1_agreement"] >= 0.9 and parity["max_abs_diff"] < 0.1 * max(1.0, parity["max_abs_logit"])

    # benchmark measures every runtime; predict then takes the fastest with the checkpoint's own outputs
    # (INT8 only with --runtime fastest, and only as it keeps accuracy), and each row says which answered.
    code, out, err = cli("benchmark", run_copy, "--rounds", "3", "--format", "json")
    assert code == 0, err
    latency = json.loads(out)["data"]["latency_ms"]
    assert set(latency) == {"pytorch", "onnx", "int8"}
    image = trained_shapes[1] / "left" / "img_000.png"
    for choice, allowed in (("auto", ("pytorch", "onnx")), ("fastest", ("pytorch", "onnx", "int8"))):
        code, out, err = cli("predict", run_copy, image, "--runtime", choice, "--format", "json")
        assert code == 0, err
        fastest = min(allowed, key=latency.get)
        assert json.loads(out)[0]["runtime"] == fastest and f"runtime: {fastest} (" in err

    # A graph whose compute stays in float is not called INT8: refused, the previous file kept.
    import cnnlab.deploy.quantize as quantize

    before = (run_copy / "model.int8.onnx").read_bytes()
    monkeypatch.setattr(quantize, "operator_counts", lambda path: {"Conv": 2, "Gemm": 2, "QuantizeLinear": 4})
    code, _, err = cli("quantize", run_copy, "--calibration", "8")
    assert code == 2 and "no integer operator" in err and err.count("\n") == 1
    assert (run_copy / "model.int8.onnx").read_bytes() == before and not list(run_copy.glob(".*tmp*"))


@pytest.mark.parametrize("args", [["--calibration", "0"], ["--threads", "-1"]])  # 0 is auto
def test_bad_options_are_one_line_errors(cli, run_copy, args) -> None:
    code, _, err = cli("quantize", run_copy, *args)
    assert code == 2 and err.count("\n") == 1
