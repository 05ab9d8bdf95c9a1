"""`cnnlab train PHOTOS --model efficientnet_lite0 --pretrained`: both stages, from the command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import read_json, write_photo_crops

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stage_tables(out: str) -> dict[str, str]:
    """The per-stage blocks the run prints: stage name -> text up to its totals line."""
    return dict(
        re.findall(
            r"stage \d '(\w+)': ((?:the|every) .*?Trainable params: [\d,]+  Frozen params: [\d,]+)", out, re.DOTALL
        )
    )


def test_pretrained_run_prints_each_stage_and_reports_what_finetuning_gave(cli, tmp_path: Path) -> None:
    photos = write_photo_crops(tmp_path / "photos")
    code, out, err = cli(
        "train",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--image-size",
        "64",
        "--frozen-epochs",
        "20",
        "--finetune-epochs",
        "1",
        "--refit",
        "off",
        "--runs-dir",
        tmp_path / "runs",
        "--verbose",
    )  # each stage's table of what trains
    assert code == 0, err
    tables = stage_tables(out)
    assert list(tables) == ["frozen", "finetune"]
    assert "features computed once" in tables["frozen"] and re.search(r"blocks\s+[\d,]+\s+no", tables["frozen"])
    assert re.search(r"blocks\s+[\d,]+\s+partly: [\d,]+", tables["finetune"])  # the top 10 layers only
    trainable = [int(n.replace(",", "")) for n in re.findall(r"Trainable params: ([\d,]+)  Frozen", out)]
    assert trainable[0] == 1280 * 2 + 2 and trainable[1] > trainable[0]  # head, then head + backbone top
    # The architecture summary printed first already shows stage 1's frozen backbone.
    assert re.search(r"Trainable params: 2,562\nNon-trainable params: [\d,]+", out)
    meta = read_json(next((tmp_path / "runs").iterdir()) / "run.json")
    frozen, finetune = meta["stages"]
    assert frozen["feature_cache"] and not finetune["feature_cache"]
    assert frozen["test_acc"] >= 0.9 and finetune["test_acc"] >= 0.9  # ImageNet features separate them
    run = next((tmp_path / "runs").iterdir())
    assert finetune["test_acc"] == read_json(run / "metrics.json")["test"]["accuracy"]  # scored once, at the end
    assert meta["improvement"].startswith("improvement from fine-tuning: ")
    said = meta["improvement"] if meta["kept"]["stage"] == "finetune" else "fine-tuning kept no weights"
    assert said in out  # the console's closing results, below each stage's line


def test_lesson_frozen_base_command_trains_only_the_lesson_head(cli, tmp_path: Path) -> None:
    photos = write_photo_crops(tmp_path / "photos", per_class=20)
    code, out, err = cli(
        "train",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--head",
        "lesson",
        "--stages",
        "frozen",
        "--image-size",
        "64",
        "--runs-dir",
        tmp_path / "runs",
        "-v",
    )
    assert code == 0, err
    tables = stage_tables(out)
    assert list(tables) == ["frozen"]
    lesson_head = 1280 * 256 + 256 + 256 * 2 + 2  # GAP-Dense256-ReLU-Dropout-Dense(2)
    assert f"Trainable params: {lesson_head:,}  Frozen" in tables["frozen"]
    (stage,) = read_json(next((tmp_path / "runs").iterdir()) / "run.json")["stages"]
    assert stage["params_trainable"] == lesson_head and stage["test_acc"] >= 0.75


def test_ctrl_c_while_features_are_computed_is_on_record_and_resumes(cli, tmp_path: Path, monkeypatch) -> None:
    import cnnlab.training.stage_data as stage_data

    real = stage_data.cache_features

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises during the feature pass (outside any epoch)

    photos = write_photo_crops(tmp_path / "photos", per_class=12)
    monkeypatch.setattr(stage_data, "cache_features", interrupted)
    code, out, err = cli(
        "train",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--image-size",
        "64",
        "--frozen-epochs",
        "2",
        "--finetune-epochs",
        "1",
        "--runs-dir",
        tmp_path / "runs",
    )
    run = next((tmp_path / "runs").iterdir())
    assert code == 130 and f"resume with: cnnlab train --resume {run}" in out, (out, err)
    assert "interrupted: during feature extraction of stage 1 'frozen'" in out
    meta = read_json(run / "run.json")
    assert meta["status"] == "interrupted" and meta["attempts"][-1]["ended"] == "interrupted"
    monkeypatch.setattr(stage_data, "cache_features", real)
    code, out, err = cli("train", "--resume", run)
    assert code == 0, err
    assert read_json(run / "run.json")["status"] == "completed" and "test accuracy" in out
