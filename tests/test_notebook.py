"""The lesson as a notebook (examples/lesson.ipynb) runs from top to bottom, figures and all."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "lesson.ipynb"


# 41 s (the whole lesson: training, compare, INT8 export): make test stays near its 6 minutes on this
# machine; test_api.py and test_api_deploy.py cover the calls it makes, `make test-all` runs it whole.
@pytest.mark.slow
def test_the_lesson_notebook_runs_and_shows_its_figures(tmp_path: Path) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert len(images) >= 3, "the curves, the confusion matrix, the augmentation grid"
    assert sum("<img" in o["data"]["text/html"] for o in html) >= 5  # + conv, pool, Grad-CAM, filters, compare
    assert any("test accuracy" in o["data"]["text/html"] for o in html)  # the Run summary
    assert any("mobilenetv2" in o["data"]["text/html"] and "<img" in o["data"]["text/html"] for o in html)  # compare
    assert any("INT8" in o["data"]["text/html"] for o in html)  # the benchmark table
    assert (tmp_path / "runs-lesson" / "mnist" / "report.html").is_file()
    assert (tmp_path / "runs-lesson" / "mnist" / "model.int8.onnx").is_file()
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors
