"""End to end through the CLI: train, then evaluate and predict from the run folder alone."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import read_json, unnamed_run_files

RUN_FILES = [
    "config.yaml",
    "run.json",
    "metrics.csv",
    "metrics.json",
    "checkpoints/best.ckpt",
    "checkpoints/last.ckpt",
    "history.png",
    "confusion_matrix.png",
    "classification_report.txt",
    "model_summary.txt",
    "skipped_files.csv",
    "report.html",
]


def test_train_on_generated_folder_writes_every_file_and_learns(cli, shapes_folder, tmp_path):
    code, out, err = cli(
        "train",
        shapes_folder,
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "shapes",
    )
    assert code == 0, err
    run = tmp_path / "runs" / "shapes"
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    metrics = read_json(run / "metrics.json")["test"]
    assert metrics["accuracy"] > 0.7  # chance is 1/3
    meta = read_json(run / "run.json")
    assert meta["class_names"] == ["left", "middle", "right"]
    assert meta["status"] == "completed"
    splits = {name: split["count"] for name, split in meta["data"]["splits"].items()}
    assert splits == {"train": 47, "val": 18, "test": 7}  # 72 images: test 10%, val auto (a quarter of a small set)
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    hidden = sum(int(n) for n in re.findall(r"(\d+) quicker epochs? not shown", out))  # quick ones: not a line each
    assert epochs[0].startswith("epoch 1/6") and len(epochs) + hidden == meta["stages"][0]["epochs"] >= 2
    assert all("val_acc" in line and "train_loss" in line for line in epochs)
    assert f"report:     {run / 'report.html'}" in out
    # Every file the run wrote is one RunFiles names: no stray names for later commands to guess.
    assert not unnamed_run_files(run)


def test_mnist_sample_one_epoch_beats_chance_and_reopens(cli, tmp_path):
    runs = tmp_path / "runs"
    code, _, err = cli("train", "mnist-sample", "--epochs", "1", "--runs-dir", runs, "--name", "m")
    assert code == 0, err
    run = runs / "m"
    metrics = read_json(run / "metrics.json")["test"]
    assert metrics["accuracy"] > 0.6  # chance is 0.1; one epoch of the lesson's CNN gives ~0.85
    assert "top5_accuracy" in metrics  # 10 classes > 5
    assert set(metrics["per_class"]) == {str(d) for d in range(10)}
    # evaluate needs only the run folder, and reproduces the same test accuracy
    code, _, err = cli("evaluate", run)
    assert code == 0, err
    assert read_json(run / "metrics.json")["test"]["accuracy"] == metrics["accuracy"]


# In make test, two deterministic runs are compared by test_api's test_the_api_and_the_cli_make_the_same_run
# (metrics.csv and metrics.json equal) and, on this image folder, by test_stored_training's
# test_disk_and_memory_stores_give_the_same_first_epoch (the same history to the last digit); test_same_metrics
# and the resume tests compare more. This third pair of runs adds no path.
@pytest.mark.slow
def test_deterministic_runs_give_identical_metrics(cli, shapes_folder, tmp_path):
    results = []
    for name in ("a", "b"):
        code, _, err = cli(
            "train",
            shapes_folder,
            "--epochs",
            "2",
            "--batch-size",
            "16",
            "--deterministic",
            "--seed",
            "7",
            "--runs-dir",
            tmp_path / "runs",
            "--name",
            name,
        )
        assert code == 0, err
        results.append(read_json(tmp_path / "runs" / name / "metrics.json")["test"])
        results.append((tmp_path / "runs" / name / "metrics.csv").read_text())
    assert results[0] == results[2]
    assert results[1] == results[3]


def test_console_script_runs_as_a_real_process(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0  # one line
    assert "not found" in result.stderr
