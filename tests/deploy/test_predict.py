"""``cnnlab predict``: top-k classes from the run folder alone, bad files reported, not fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def trained(trained_shapes) -> tuple[Path, Path]:
    """The session's trained run (simple_cnn on 20 px bars, no exported model): predict only reads it."""
    return trained_shapes


def test_files_and_folders_in_order_with_top_k(cli, trained) -> None:
    run, shapes = trained
    code, out, err = cli(
        "predict", run, shapes / "right" / "img_000.png", shapes / "left", "--top-k", "2", "--format", "csv"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "image,rank,class,probability,error,runtime"
    assert all(line.endswith(",pytorch") for line in lines[1:])  # no export yet: the checkpoint answered
    assert len(lines) == 1 + 2 * 25  # 1 file + the 24 in left/, two guesses each
    assert lines[1].split(",")[2] == "right"
    assert sum(line.split(",")[2] == "left" for line in lines[3::2]) >= 20  # top-1 of the left/ images


def test_a_corrupt_file_gets_an_error_row_and_the_rest_are_classified(cli, trained, tmp_path) -> None:
    run, shapes = trained
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    code, out, err = cli("predict", run, tmp_path / "broken.png", shapes / "middle" / "img_001.png", "--format", "json")
    assert code == 0, err
    rows = json.loads(out)
    assert rows[0]["top"] == [] and "png" in rows[0]["error"].lower()
    assert rows[1]["error"] is None and rows[1]["top"][0]["class"] == "middle"
    assert sum(g["probability"] for g in rows[1]["top"]) == pytest.approx(1.0)  # all three classes shown


def test_every_predict_path_names_the_runtime_that_answered(cli, trained, tmp_path) -> None:
    import cnnlab

    run, shapes = trained
    image = shapes / "left" / "img_002.png"
    code, out, err = cli("predict", run, image)  # the table: the runtime and why, on the console
    assert code == 0, err
    assert "runtime: pytorch (PyTorch eager)" in err and "no exported model" in err
    code, out, err = cli("predict", run, image, "--format", "json")
    assert code == 0 and json.loads(out)[0]["runtime"] == "pytorch"
    (row,) = cnnlab.load_run(run).predict(image)
    assert row["runtime"] == "pytorch" and row["top"][0]["class"] == "left"
    code, _, err = cli("predict", run, image, "--runtime", "int8")  # asked for, and missing: how to make it
    assert code == 2 and err.splitlines()[-1].endswith(f"no model.int8.onnx yet; make it with: cnnlab quantize {run}")


def test_nothing_readable_and_missing_inputs_are_errors(cli, trained, tmp_path) -> None:
    run, _ = trained
    (tmp_path / "only.png").write_text("text")
    code, _, _ = cli("predict", run, tmp_path / "only.png")
    assert code == 2
    code, _, err = cli("predict", run, tmp_path / "missing.jpg")
    assert code == 2 and "not found" in err
    code, _, err = cli("predict", tmp_path, tmp_path / "only.png")
    assert code == 2 and "not a cnnlab run folder" in err
