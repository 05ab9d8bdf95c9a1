"""``cnnlab distill``: with alpha 0 it is plain training; a good teacher rescues a student taught wrong labels."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import read_json, write_shapes_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: no OpenMP spin-waits


def _listing(path: Path, shapes: Path, wrong: float) -> Path:
    """A CSV of the shapes with fixed splits; ``wrong`` of the 'left' training images labelled 'middle'."""
    rows = []
    for name in ("left", "middle", "right"):
        files = sorted((shapes / name).glob("*.png"))
        for i, file in enumerate(files):
            split = "test" if i < 6 else "val" if i < 10 else "train"
            label = "middle" if name == "left" and split == "train" and (i - 10) < wrong * (len(files) - 10) else name
            rows.append([file, label, split])
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    return path


@pytest.fixture(scope="module")
def noisy_task(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(clean listing, listing with 70% of 'left' training labels wrong, teacher run on the clean one)."""
    from cnnlab.cli.main import main

    root = tmp_path_factory.mktemp("distill")
    shapes = write_shapes_folder(root / "shapes", per_class=30)
    clean, noisy = _listing(root / "clean.csv", shapes, 0.0), _listing(root / "noisy.csv", shapes, 0.7)
    assert main(["train", str(clean), "--epochs", "6", "--batch-size", "16", "--runs-dir", str(root / "runs"),
                 "--name", "teacher", "--seed", "3"]) == 0
    return clean, noisy, root / "runs" / "teacher"


def _student(cli, teacher: Path, data: Path, alpha: str, name: str) -> tuple[dict, dict]:
    code, _, err = cli("distill", data, "--teacher", teacher, "--student", "simple_cnn", "--alpha", alpha,
                       "--epochs", "6", "--batch-size", "16", "--deterministic", "--name", name,
                       "--format", "json")
    assert code == 0, err
    runs = teacher.parent
    return read_json(runs / name / "metrics.json")["test"], read_json(runs / f"{name}-alone" / "metrics.json")["test"]


def test_alpha_zero_is_plain_training(cli, noisy_task) -> None:
    clean, _, teacher = noisy_task
    distilled, alone = _student(cli, teacher, clean, "0", "zero")
    assert distilled == alone  # same seed, same batches, the same loss: identical results
    runs = teacher.parent
    assert (runs / "zero" / "metrics.csv").read_text() == (runs / "zero-alone" / "metrics.csv").read_text()


def test_a_teacher_rescues_a_student_taught_wrong_labels(cli, noisy_task) -> None:
    _, noisy, teacher = noisy_task
    distilled, alone = _student(cli, teacher, noisy, "0.9", "taught")
    assert alone["per_class"]["left"]["recall"] < 0.5  # alone, it learns that bars on the left are 'middle'
    assert distilled["accuracy"] >= alone["accuracy"] + 0.2
    table = json.loads((teacher.parent / "taught" / "tables" / "distill.json").read_text())
    assert [row[0] for row in table["rows"]] == ["teacher", "student alone", "distilled student"]
    assert table["data"]["teacher_logits"] == "computed once"
    assert "Distillation into taught" in (teacher.parent / "taught" / "report.html").read_text()


@pytest.mark.parametrize("args, message", [
    (["--student", "resnet_tiny"], "unknown model 'resnet_tiny'"),
    (["--student", "simple_cnn", "--alpha", "1.5"], "--alpha must be between 0 and 1"),
    ([], "no student given"),
])
def test_bad_settings_fail_before_training(cli, noisy_task, args, message) -> None:
    _, _, teacher = noisy_task
    code, _, err = cli("distill", "--teacher", teacher, *args)
    assert code == 2 and message in err and err.count("\n") == 1
