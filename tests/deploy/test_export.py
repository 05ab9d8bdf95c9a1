"""``cnnlab export`` and ``predict`` on artifacts: parity with the checkpoint, metadata inside the file."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import unnamed_run_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: no OpenMP spin-waits


def test_onnx_export_matches_the_checkpoint_and_predicts_alone(cli, run_copy, trained_shapes, tmp_path) -> None:
    _, shapes = trained_shapes
    code, out, err = cli("export", run_copy)
    assert code == 0, err
    assert "parity on 25 images" in out and "top-1 agreement 100.0%" in out  # val 18 + test 7 of 72
    sidecar = json.loads((run_copy / "model.json").read_text())
    parity = sidecar["artifacts"]["model.onnx"]["parity"]
    assert parity["max_abs_diff"] < 1e-4 and parity["top1_agreement"] == 1.0
    assert sidecar["class_names"] == ["left", "middle", "right"]
    # The artifact alone, copied away from its run, gives the checkpoint's top-k.
    alone = tmp_path / "elsewhere"
    alone.mkdir()
    shutil.copy(run_copy / "model.onnx", alone / "classifier.onnx")
    images = [shapes / "left", shapes / "right" / "img_003.png"]
    code, out, err = cli("predict", alone / "classifier.onnx", *images, "--format", "json", "--top-k", "3")
    assert code == 0, err and "ONNX Runtime FP32" in err
    from_onnx = json.loads(out)
    code, out, err = cli("predict", run_copy, *images, "--format", "json", "--top-k", "3", "--runtime", "pytorch")
    assert code == 0, err and "PyTorch" in err
    from_checkpoint = json.loads(out)
    assert len(from_onnx) == 25
    for a, b in zip(from_onnx, from_checkpoint):
        assert [g["class"] for g in a["top"]] == [g["class"] for g in b["top"]]
        assert [g["probability"] for g in a["top"]] == pytest.approx([g["probability"] for g in b["top"]], abs=1e-5)
    assert not unnamed_run_files(run_copy)


def test_torchscript_export_and_a_failed_parity_check(cli, run_copy, trained_shapes) -> None:
    # A tolerance no float32 graph meets: the export is refused and nothing is left behind.
    code, out, err = cli("export", run_copy, "--format", "torchscript", "--tolerance", "1e-12")
    assert code == 2 and "differs from the checkpoint" in err and err.count("\n") == 1
    assert not (run_copy / "model.ts").exists() and not list(run_copy.glob(".*tmp*"))
    code, out, err = cli("export", run_copy, "--format", "torchscript")
    assert code == 0, err
    code, out, err = cli(
        "predict", run_copy / "model.ts", trained_shapes[1] / "middle" / "img_000.png", "--format", "csv"
    )
    assert code == 0, err
    assert out.splitlines()[1].split(",")[2] == "middle"


def test_files_without_cnnlab_metadata_are_refused(cli, trained_shapes, tmp_path) -> None:
    import torch

    plain = tmp_path / "plain.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 2, 3), (torch.randn(1, 3, 8, 8),), str(plain), dynamo=False)
    image = trained_shapes[1] / "left" / "img_000.png"
    code, _, err = cli("predict", plain, image)
    assert code == 2 and "no cnnlab metadata" in err and err.count("\n") == 1
    (tmp_path / "junk.onnx").write_text("not a model")
    code, _, err = cli("predict", tmp_path / "junk.onnx", image)
    assert code == 2 and "not a readable ONNX model" in err
