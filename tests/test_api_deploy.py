"""The Python API's comparison and deployment jobs: the same files and tables as their commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cnnlab

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> cnnlab.Run:
    runs = tmp_path_factory.mktemp("api-deploy") / "runs"
    return cnnlab.train("digits", model="simple_cnn", epochs=1, batch_size=64, seed=1, runs_dir=str(runs), name="d")


def test_export_quantize_and_benchmark_from_a_run(run: cnnlab.Run) -> None:
    exported = run.export()
    assert exported.path == run.path / "model.onnx" and exported.path.is_file()
    assert exported.parity["top1_agreement"] == 1.0
    digits = [(np.random.default_rng(i).random((8, 8)) * 255).astype(np.uint8) for i in range(4)]
    alone = cnnlab.predict(exported.path, digits, top_k=1)  # the artifact on its own, no run folder
    checkpoint = run.predict(digits, top_k=1, runtime="pytorch")
    assert [p["top"][0]["class"] for p in alone] == [p["top"][0]["class"] for p in checkpoint]

    quantized = run.quantize(calibration=64)
    assert quantized.path == run.path / "model.int8.onnx" and quantized.path.is_file()
    assert sum(quantized.ops.values()) > 0
    table = run.benchmark()
    assert len(table.rows) == 3  # PyTorch, ONNX Runtime FP32 and INT8
    assert "<table>" in table._repr_html_() and "INT8" in table._repr_html_()
    assert {t.title for t in run.tables()} >= {table.title}


def test_prune_returns_the_smaller_run(run: cnnlab.Run) -> None:
    pruned = run.prune(sparsity=0.5)
    assert pruned.path.parent == run.path / "pruned"
    assert pruned.meta["model"]["params_total"] < run.meta["model"]["params_total"]
    assert pruned.predict([np.zeros((8, 8), np.uint8)])[0]["top"]


def test_compare_measures_and_keeps_a_bad_name_as_a_row(tmp_path: Path) -> None:
    comparison = cnnlab.compare(["simple_cnn", "resnet5O"], image_size=32, repeats=3, out=tmp_path / "cmp")
    rows = {row["model"]: row for row in comparison.rows}
    assert rows["simple_cnn"]["status"] == "ok" and rows["simple_cnn"]["params_total"] > 0
    assert "did you mean" in rows["resnet5O"]["note"]
    assert (tmp_path / "cmp" / "comparison.csv").is_file()
    shown = comparison._repr_html_()
    assert "simple_cnn" in shown and "<img" in shown
    with pytest.raises(cnnlab.errors.CnnlabError, match="only applies to training"):
        cnnlab.compare(["simple_cnn"], epochs=3)
