"""--tracking mlflow: a run's options, epochs, scores and files in a real MLflow store, read back with MlflowClient."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import lightning as L
import pytest
from playwright.sync_api import Page, expect
from safetensors.torch import save_file

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.training import stage_fit
from cnnlab.training.history import load_history
from cnnlab.training.run_fit import TrainingInterrupted

mlflow = pytest.importorskip("mlflow", reason="MLflow is not installed: pip install 'cnnlab[track]'")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # this machine is offline: no usage reports


def _steps(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """A metric's history as {step: value}, the last value logged at each step (a resumed epoch logs again)."""
    history = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return {m.step: m.value for m in history}


def test_a_tracked_run_is_in_mlflow_with_its_options_epochs_scores_and_files(cli, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    code, out, err = cli(
        "train",
        "digits",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--runs-dir",
        runs,
        "--name",
        "t",
        "--tracking",
        "mlflow",
    )
    assert code == 0, err
    meta = json.loads((runs / "t" / "run.json").read_text())
    record = meta["tracking"]
    assert record["uri"] == f"sqlite:///{runs.resolve()}/mlflow.db" and (runs / "mlflow.db").is_file()
    assert f"mlflow ui --backend-store-uri {record['uri']}" in out
    client = MlflowClient(record["uri"])
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "t"
    assert client.get_experiment(run.info.experiment_id).name == "cnnlab/digits"
    params = run.data.params
    assert params["train.epochs"] == "3" and params["data.source"] == "digits" and params["model.name"] == "simple_cnn"
    assert params["data.batch_size"] == "64" and params["tracking"] == "mlflow"
    history = load_history(runs / "t" / "metrics.csv")
    for key in ("val_loss", "val_acc", "train_loss"):
        assert _steps(client, run.info.run_id, key) == pytest.approx(dict(enumerate(history[key])), rel=1e-6)
    test = json.loads((runs / "t" / "metrics.json").read_text())["test"]
    assert run.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert run.data.metrics["stage.train.epochs"] == 3
    assert run.info.artifact_uri.startswith((runs / "mlartifacts").resolve().as_uri())  # beside the store
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {
        "report.html",
        "config.yaml",
        "run.json",
        "metrics.csv",
        "history.png",
        "confusion_matrix.png",
        "stages.json",
        "explain",
    } <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "explain")} >= {"explain/gradcam_test.png"}

    code, out, err = cli("export", runs / "t")  # model files join the same MLflow run
    assert code == 0, err
    assert {"model.onnx", "model.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}

    code, out, err = cli("runs", "list", "--runs-dir", runs)
    assert code == 0, err
    opens = f"mlflow ui --backend-store-uri {record['uri']}"
    assert "t" in out and "completed" in out and opens in out.replace("\n", "")


def test_a_resumed_run_goes_on_in_the_same_mlflow_run_epochs_counted_through_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "start.safetensors"  # simple_cnn from a weights file: two stages in seconds
    save_file(create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8)).state_dict(), weights)
    options = {
        "model": "simple_cnn",
        "weights": str(weights),
        "feature_cache": False,
        "frozen_epochs": 2,
        "finetune_epochs": 3,
        "batch_size": 64,
        "runs_dir": str(tmp_path / "runs"),
        "name": "r",
        "tracking": "mlflow",
    }

    class Kill(L.Callback):  # Ctrl-C in the second fine-tuning epoch
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 1 and pl_module.metadata.get("stage") == "finetune":
                raise KeyboardInterrupt

    original = stage_fit.build_trainer

    def with_kill(*args, extra_callbacks=None, **kwargs):
        return original(*args, extra_callbacks=[*extra_callbacks, Kill()], **kwargs)

    monkeypatch.setattr(stage_fit, "build_trainer", with_kill)
    with pytest.raises(TrainingInterrupted):
        cnnlab.train("digits", **options)
    folder = tmp_path / "runs" / "r"
    record = json.loads((folder / "run.json").read_text())["tracking"]
    client = MlflowClient(record["uri"])
    assert client.get_run(record["run_id"]).info.status == "KILLED"
    monkeypatch.setattr(stage_fit, "build_trainer", original)

    cnnlab.resume(folder)
    assert json.loads((folder / "run.json").read_text())["tracking"] == record
    run = client.get_run(record["run_id"])
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no second MLflow run
    history = load_history(folder / "metrics.csv")
    assert list(history["stage"]) == ["frozen"] * 2 + ["finetune"] * 3
    assert _steps(client, run.info.run_id, "val_loss") == pytest.approx(dict(enumerate(history["val_loss"])), rel=1e-6)
    assert run.data.metrics["stage.frozen.epochs"] == 2 and run.data.metrics["stage.finetune.epochs"] == 3


def test_tracking_options_are_checked_and_an_unusable_store_stops_the_run_before_it_starts(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="add --tracking mlflow"):
        cnnlab.configure("digits", tracking_uri="sqlite:///x.db")
    with pytest.raises(CnnlabError, match="--tracking must be one of off, mlflow"):
        cnnlab.configure("digits", tracking="wandb")
    blocked = tmp_path / "file"
    blocked.write_text("a file where the store's folder would be")
    with pytest.raises(CnnlabError, match="cannot use the MLflow store"):
        cnnlab.train(
            "digits",
            epochs=1,
            runs_dir=str(tmp_path / "runs"),
            name="x",
            tracking="mlflow",
            tracking_uri=f"sqlite:///{blocked}/mlflow.db",
        )
    assert not (tmp_path / "runs" / "x").exists()  # no half-started run folder left behind
    with socket.socket() as closed:  # a port nothing listens on: a tracking server that is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(CnnlabError, match=f"cannot use the MLflow store http://127.0.0.1:{port}"):
        cnnlab.train(
            "digits",
            epochs=1,
            runs_dir=str(tmp_path / "runs"),
            name="y",
            tracking="mlflow",
            tracking_uri=f"http://127.0.0.1:{port}",
        )
    assert time.monotonic() - started < 30  # said at once, not after MLflow's minutes of retries


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # `mlflow ui` takes 10-25 s to start here and its pages 5-15 s to draw: make test-all runs it
@pytest.mark.timeout(300)
def test_a_tracked_run_shows_in_the_mlflow_ui_with_its_parameters_and_metric_chart(
    cli, tmp_path: Path, page: Page
) -> None:
    runs = tmp_path / "runs"
    code, _, err = cli("train", "digits", "--epochs", "3", "--runs-dir", runs, "--name", "ui", "--tracking", "mlflow")
    assert code == 0, err
    record = json.loads((runs / "ui" / "run.json").read_text())["tracking"]
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "ui",
            "--backend-store-uri",
            record["uri"],
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).close()
                break
            except OSError:
                assert ui.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
                time.sleep(0.5)
        elsewhere: list[str] = []
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(base)
                else (elsewhere.append(route.request.url), route.abort())[1]
            ),
        )
        run_page = f"{base}/#/experiments/{record['experiment_id']}/runs/{record['run_id']}"
        page.goto(run_page)
        expect(page.get_by_role("heading", name="ui")).to_be_visible(timeout=60_000)
        expect(page.get_by_text("Finished").first).to_be_visible()
        parameters = page.get_by_role("row").filter(has_text="train.epochs")
        expect(parameters.first).to_contain_text("3", timeout=30_000)
        page.goto(run_page + "/model-metrics")
        page.get_by_placeholder("Search metric charts").fill("val_acc")
        chart = page.locator(".js-plotly-plot")
        expect(chart).to_have_count(1, timeout=60_000)
        expect(chart.locator("path.point")).to_have_count(3)  # the curve: one point per epoch
        page.screenshot(path=tmp_path / "mlflow-ui.png")
        assert not elsewhere, elsewhere
    finally:
        ui.terminate()
        ui.wait(timeout=30)
