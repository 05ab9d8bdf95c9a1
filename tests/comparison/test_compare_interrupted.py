"""``cnnlab compare`` stopped by Ctrl-C while a model trains: the row says how to resume that run."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from cnnlab.comparison import architectures
from cnnlab.config import RunConfig
from cnnlab.training.run_fit import TrainingInterrupted


@pytest.mark.parametrize("between_epochs", [True, False])
def test_an_interrupted_model_is_noted_with_its_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, between_epochs: bool
) -> None:
    root = tmp_path / "runs" / "simple_cnn"
    files = SimpleNamespace(root=root)
    # Stopped between epochs (e.g. while stage-1 features are cached) there is no model to report
    # on: the exception carries the run's files only. It used to fail with AttributeError on None.
    result = None if between_epochs else SimpleNamespace(files=files)

    def interrupted(*args, **kwargs):
        raise TrainingInterrupted(result, files)  # type: ignore[arg-type]

    monkeypatch.setattr(architectures, "train_model", interrupted)
    rows = [
        {"model": "simple_cnn", "status": "ok", "weights": "random"},
        {"model": "fast_cnn", "status": "ok", "weights": "random"},
    ]
    stopped = architectures._train_rows(rows, RunConfig(), SimpleNamespace(weights={}), tmp_path, "cnnlab compare")
    assert stopped == str(root)
    assert rows[0]["note"] == f"training interrupted: cnnlab train --resume {root}"
    assert "note" not in rows[1]  # the models after it are left untrained
