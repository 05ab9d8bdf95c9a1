"""``cnnlab distill``: with alpha 0 it is plain training; a good teacher rescues a student taught wrong labels;
a student no smaller and no faster is refused; the default student is a pruned copy of the teacher that
starts from its weights; a student no better than the most common class is reported as failed."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from conftest import batchnorm_statistics, read_json, write_shapes_folder

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
    assert (
        main(
            [
                "train",
                str(clean),
                "--epochs",
                "6",
                "--batch-size",
                "16",
                "--runs-dir",
                str(root / "runs"),
                "--name",
                "teacher",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    return clean, noisy, root / "runs" / "teacher"


def _student(cli, teacher: Path, data: Path, alpha: str, name: str) -> tuple[dict, dict]:
    # the teacher's own architecture: no smaller, no faster, so --force (distillation itself is tested here)
    code, _, err = cli(
        "distill",
        data,
        "--teacher",
        teacher,
        "--student",
        "simple_cnn",
        "--force",
        "--alpha",
        alpha,
        "--epochs",
        "6",
        "--batch-size",
        "16",
        "--deterministic",
        "--name",
        name,
        "--format",
        "json",
    )
    assert code == 0, err
    runs = teacher.parent
    return read_json(runs / name / "metrics.json")["test"], read_json(runs / f"{name}-alone" / "metrics.json")["test"]


def test_alpha_zero_is_plain_training(cli, noisy_task) -> None:
    clean, _, teacher = noisy_task
    distilled, alone = _student(cli, teacher, clean, "0", "zero")
    assert distilled == alone  # same seed, same batches, the same loss: identical results
    runs = teacher.parent
    assert (runs / "zero" / "metrics.csv").read_text() == (runs / "zero-alone" / "metrics.csv").read_text()
    # no better than alone, and said so: in the table's notes and first in the distilled run's
    notes = json.loads((runs / "zero" / "tables" / "distill.json").read_text())["notes"]
    assert any(note.startswith("WARNING: distillation did not help") for note in notes)
    assert read_json(runs / "zero" / "run.json")["notes"][0].startswith("Distillation did not help")


def test_a_teacher_rescues_a_student_taught_wrong_labels(cli, noisy_task) -> None:
    _, noisy, teacher = noisy_task
    distilled, alone = _student(cli, teacher, noisy, "0.9", "taught")
    assert alone["per_class"]["left"]["recall"] < 0.5  # alone, it learns that bars on the left are 'middle'
    assert distilled["accuracy"] >= alone["accuracy"] + 0.2
    table = json.loads((teacher.parent / "taught" / "tables" / "distill.json").read_text())
    assert [row[0] for row in table["rows"]] == ["teacher", "student alone", "distilled student"]
    assert table["data"]["teacher_logits"] == "computed once"
    assert not any("did not help" in note for note in table["notes"])
    assert "Distillation into taught" in (teacher.parent / "taught" / "report.html").read_text()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--student", "resnet_tiny"], "unknown model 'resnet_tiny'"),
        (["--student", "simple_cnn", "--alpha", "1.5"], "--alpha must be between 0 and 1"),
        (["--student", "simple_cnn", "--student-sparsity", "1"], "--student-sparsity must be between 0 and 1"),
    ],
)
def test_bad_settings_fail_before_training(cli, noisy_task, args, message) -> None:
    _, _, teacher = noisy_task
    code, _, err = cli("distill", "--teacher", teacher, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_student_larger_and_slower_than_its_teacher_is_refused(cli, noisy_task) -> None:
    clean, _, teacher = noisy_task
    code, out, err = cli(
        "distill", clean, "--teacher", teacher, "--student", "resnet18", "--epochs", "1", "--name", "big"
    )
    assert code == 2 and err.count("\n") == 1
    assert "no smaller and no faster than its teacher" in err and "--force" in err and "--student pruned" in err
    assert "11,178,051" in out + err  # the parameters side by side (resnet18 with 3 classes)
    assert not (teacher.parent / "big").exists() and not (teacher.parent / "big-alone").exists()


def test_force_distils_into_a_larger_student(cli, noisy_task) -> None:
    clean, _, teacher = noisy_task  # fast_cnn: 102,491 parameters against simple_cnn's 93,635, twice as slow here
    code, _, err = cli(
        "distill",
        clean,
        "--teacher",
        teacher,
        "--student",
        "fast_cnn",
        "--force",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--name",
        "forced",
        "--format",
        "json",
    )
    assert code == 0, err
    assert "going on (--force)" in err
    meta = read_json(teacher.parent / "forced" / "run.json")
    assert meta["distillation"]["size_check"]["student_params"] > meta["distillation"]["size_check"]["teacher_params"]


def test_the_default_student_is_a_pruned_copy_of_the_teacher(cli, noisy_task) -> None:
    clean, _, teacher = noisy_task
    code, out, err = cli(
        "distill",
        clean,
        "--teacher",
        teacher,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--name",
        "copy",
        "--format",
        "json",
    )
    assert code == 0, err
    table = json.loads(out)
    assert [row[1] for row in table["rows"]][1:] == ["simple_cnn with 50% of its channels pruned"] * 2
    teacher_params, alone_params, distilled_params = (int(row[2].replace(",", "")) for row in table["rows"])
    assert distilled_params == alone_params < 0.6 * teacher_params
    meta = read_json(teacher.parent / "copy" / "run.json")
    pruned = Path(meta["distillation"]["pruned_from"])
    assert pruned.parent == teacher / "pruned"  # cnnlab prune's run of the copy, before any training
    # it starts from the teacher's weights: far above chance (1 in 3) before it trains at all
    assert read_json(pruned / "metrics.json")["test"]["accuracy"] > 0.6
    assert read_json(teacher.parent / "copy" / "metrics.json")["test"]["accuracy"] > 0.6
    assert (teacher.parent / "copy-alone" / "architecture.json").is_file()  # reloads at its own widths
    # each run made here says where its time went, as a trained run does
    for run in (teacher.parent / "copy", teacher.parent / "copy-alone", pruned):
        timing = read_json(run / "run.json")["timing"]
        assert timing["total_seconds"] > 0 and "evaluation" in timing["phases"], run
    assert "training" in read_json(teacher.parent / "copy" / "run.json")["timing"]["phases"]


def _imbalanced_listing(path: Path, shapes: Path) -> Path:
    """Fixed splits whose test split is mostly 'left' (10 of 14): answering 'left' scores 71%."""
    rows = []
    for name, tested in (("left", 10), ("middle", 2), ("right", 2)):
        for i, file in enumerate(sorted((shapes / name).glob("*.png"))):
            rows.append([file, name, "test" if i < tested else "val" if i < tested + 4 else "train"])
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    return path


def test_a_student_that_learns_nothing_is_reported_as_failed(cli, noisy_task, tmp_path) -> None:
    clean, _, teacher = noisy_task
    data = _imbalanced_listing(tmp_path / "imbalanced.csv", clean.parent / "shapes")
    code, out, err = cli(
        "distill",
        data,
        "--teacher",
        teacher,
        "--student",
        "simple_cnn",
        "--force",
        "--lr",
        "1e-9",
        "--epochs",
        "1",
        "--deterministic",
        "--name",
        "stuck",
    )
    assert code == 0, err
    assert "distilled student (simple_cnn) FAILED" in err and "no better than answering" in err
    assert "try --student pruned" in err  # what to try: the student alone failed too
    meta = read_json(teacher.parent / "stuck" / "run.json")
    verdict = meta["distillation"]["verdict"]
    assert verdict["failed"] and verdict["majority_rate"] == pytest.approx(10 / 14)
    assert meta["notes"][0].startswith("The distilled student (simple_cnn) FAILED")
    assert any("trained alone is stuck-alone" in note for note in meta["notes"])
    assert read_json(teacher.parent / "stuck-alone" / "run.json")["distillation_baseline"]["verdict"]["failed"]
    assert "FAILED" in (teacher.parent / "stuck" / "report.html").read_text()
    assert "FAILED" in out  # the table's first note


def test_help_and_offline_errors_name_the_distill_flags(cli, noisy_task, monkeypatch, tmp_path) -> None:
    from cnnlab.models import weights as weights_module

    code, out, _ = cli("distill", "--help")
    assert code == 0
    assert "mnist-sample" not in out and "the teacher's data" in out
    _, _, teacher = noisy_task
    monkeypatch.setattr(weights_module, "_hub_reachable", lambda *a, **k: False)  # no DNS lookup
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache: nothing downloaded before
    code, _, err = cli("distill", "--teacher", teacher, "--student", "mobilenetv3_small_100", "--pretrained")
    assert code == 2 and "--student" in err and "--model" not in err, err


def test_batchnorm_statistics_are_fresh_before_validation() -> None:
    """Few steps an epoch leave BatchNorm's running averages far from the trained network's: re-estimated
    on training images, evaluation sees what training saw."""
    from types import SimpleNamespace

    import torch
    from torch import nn

    from cnnlab.config import TrainConfig
    from cnnlab.data.normalize import Normalize
    from cnnlab.deploy.distill_step import FreshBatchNormStats
    from cnnlab.training.module import ClassifierModule

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.01), nn.Flatten(), nn.LazyLinear(2))
    images = torch.randint(150, 256, (64, 3, 8, 8), dtype=torch.uint8)  # bright: far from the initial mean 0
    module = ClassifierModule(net, 2, Normalize((0.0,) * 3, (1.0,) * 3), TrainConfig())
    unit = module.normalize(Normalize.to_unit(images))
    net.train()
    with torch.no_grad():
        in_training = net(unit)  # batch statistics, as a training step sees them
    net.eval()
    assert not torch.allclose(net(unit), in_training, atol=1e-3)  # the running averages lag behind
    FreshBatchNormStats(images, batch=64).on_validation_epoch_start(SimpleNamespace(sanity_checking=False), module)
    assert torch.allclose(net(unit), in_training, atol=1e-3)
    assert not net.training  # validation goes on in evaluation mode


def test_a_refitted_pruned_student_trains_with_the_teachers_batchnorm_statistics(
    cli, lite0_photos_run, tmp_path
) -> None:
    """The default student of a Lite0 teacher is refitted to the teacher's outputs through its BatchNorm
    statistics: both students keep them, at the stage-2 rate, and the table says so."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles, read_run_config

    teacher = Path(shutil.copytree(lite0_photos_run[0], tmp_path / "runs" / "lite0"))
    code, out, err = cli("distill", "--teacher", teacher, "--epochs", "1", "--batch-size", "16", "--name", "small")
    assert code == 0, err
    assert "both students trained with BatchNorm statistics fixed (refitted copy), lr 0.0001" in out
    pruned = Path(read_json(teacher.parent / "small" / "run.json")["distillation"]["pruned_from"])
    statistics = batchnorm_statistics(load_file(str(pruned / "pruned.safetensors")))
    for name in ("small", "small-alone"):
        files = RunFiles(teacher.parent / name)
        assert read_run_config(files).train.lr == 1e-4
        trained = load_trained(files).model.state_dict()
        assert statistics and all(torch.equal(trained[k], v) for k, v in statistics.items()), name
