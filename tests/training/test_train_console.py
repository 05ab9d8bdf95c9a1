"""What `cnnlab train` prints: data, model and plan first; compact epochs; each stage's result; clear stops."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning as L
import pytest
from safetensors.torch import save_file

from cnnlab.training import stage_data, stage_fit
from cnnlab.training.callbacks import EpochLines
from conftest import read_json, write_shapes_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _folder_with_test_split(root: Path) -> Path:
    write_shapes_folder(root / "train", per_class=24)
    write_shapes_folder(root / "test", per_class=6, seed=1)
    return root


def test_console_opens_with_the_split_classes_input_model_and_plan(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(EpochLines, "SLOW_S", 1e9)  # every epoch counts as quick, however busy the machine
    data = _folder_with_test_split(tmp_path / "shapes")
    code, out, err = cli(
        "train",
        data,
        "--epochs",
        "6",
        "--patience",
        "9",
        "--batch-size",
        "16",
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "s",
    )
    assert code == 0, err
    lines = out.splitlines()
    # 72 training images: val auto holds out a quarter of them; test is the folder's own test/
    assert lines[0] == f"data    {data}: 54 train / 18 val held out of train / 18 test, stratified, seed 42"
    assert lines[1] == "classes 3: left, middle, right; 18 train images each"
    assert lines[2].startswith("input   20x20 px RGB")
    assert lines[3].startswith("model   simple_cnn: ") and "parameters, from scratch" in lines[3]
    assert lines[4].startswith("plan    stage 1 'train': every layer trains, up to 6 epochs at lr 0.001")
    assert "model_summary.txt" in out and "Layer (type" not in out  # the table is in the run folder
    assert "Layer (type" in (tmp_path / "runs" / "s" / "model_summary.txt").read_text()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [e.split()[1] for e in epochs] == ["1/6", "6/6"]  # the first and the last; the quick ones between not
    assert "4 quicker epochs not shown" in epochs[-1]
    assert re.search(r"^stage 1 'train': 6 epochs in [\d.]+ s; best val acc [\d.]+% \(\d+/18\)", out, re.MULTILINE)


def test_verbose_prints_the_layer_table_and_every_epoch(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(EpochLines, "SLOW_S", 1e9)
    data = write_shapes_folder(tmp_path / "shapes")
    code, out, err = cli(
        "train", data, "--epochs", "4", "--patience", "9", "--verbose", "--runs-dir", tmp_path / "runs"
    )
    assert code == 0, err
    assert "Layer (type" in out and out.index("Layer (type") < out.index("data    ")
    assert [line.split()[1] for line in out.splitlines() if line.startswith("epoch ")] == ["1/4", "2/4", "3/4", "4/4"]


def test_epoch_lines_show_slow_epochs_and_a_heartbeat_of_quick_ones(capsys) -> None:
    now = [0.0]
    lines = EpochLines(slow_s=2.0, every_s=30.0, clock=lambda: now[0])
    trainer: Any = SimpleNamespace(callback_metrics={"val_loss": 0.5}, max_epochs=40, current_epoch=0)
    for seconds in [0.1] * 5 + [3.0] + [1.0] * 33 + [0.1]:  # 5 quick, 1 slow, 33 of one second, 1 quick
        lines.on_train_epoch_start(trainer, None)  # type: ignore[arg-type]
        now[0] += seconds
        lines.on_train_epoch_end(trainer, None)  # type: ignore[arg-type]
        trainer.current_epoch += 1
    lines.on_train_end(trainer, None)  # type: ignore[arg-type]
    printed = capsys.readouterr().out.splitlines()
    # the first; the slow 6th; one after 30 s of one-second epochs (the 36th); the last
    assert [int(line.split()[1].split("/")[0]) for line in printed] == [1, 6, 36, 40]
    assert "4 quicker epochs not shown" in printed[1] and "3 quicker epochs not shown" in printed[-1]
    assert printed[1].startswith("epoch 6/40  val_loss 0.5  (3.0s; ")


def _weights(tmp_path: Path) -> Path:
    """simple_cnn started from a weights file: a two-stage transfer run that trains in seconds on digits."""
    import torch

    from cnnlab.models import create_model

    weights = tmp_path / "start.safetensors"
    torch.manual_seed(0)
    save_file(create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8)).state_dict(), weights)
    return weights


def _two_stage(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "train",
        "digits",
        "--model",
        "simple_cnn",
        "--weights",
        _weights(tmp_path),
        "--frozen-epochs",
        "3",
        "--finetune-epochs",
        "3",
        "--finetune-lr",
        "1e-3",
        "--batch-size",
        "64",
        "--runs-dir",
        tmp_path / "runs",
        "--name",
        "two",
        *extra,
    ]


def test_each_stage_says_its_result_and_the_run_what_finetuning_gave(cli, tmp_path: Path) -> None:
    code, out, err = cli(*_two_stage(tmp_path))
    assert code == 0, err
    meta = read_json(tmp_path / "runs" / "two" / "run.json")
    frozen, finetune = meta["stages"]
    assert f"stage 1 'frozen': {frozen['epochs']} " in out and f"test acc {frozen['test_acc']:.2%}" in out
    assert re.search(r"^stage 2 'finetune': \d+ epochs in [\d.]+ s; best val acc", out, re.MULTILINE)
    results = out[out.rindex("stage 1 'frozen'") :]
    assert re.search(r"stage 1 'frozen'\s+val acc [\d.]+% \(\d+/\d+\), val loss [\d.]+ \(epoch \d\); test acc", results)
    if meta["kept"]["stage"] == "finetune":
        assert f"test acc {finetune['test_acc']:.2%}  <- kept" in results and meta["improvement"] in results
    else:  # stage 2's weights were not kept: no "+0.00 points" as if fine-tuning had been tried and scored
        assert "fine-tuning kept no weights: the model is stage 'frozen''s" in results
        assert "improvement from fine-tuning" not in results


class _CtrlCInFinetune(L.Callback):
    """Ctrl-C at the end of fine-tuning's 2nd epoch: last.ckpt holds its 1st."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1 and pl_module.metadata.get("stage") == "finetune":
            raise KeyboardInterrupt


def test_a_stage_interrupted_says_so_and_no_improvement_is_claimed(cli, tmp_path: Path, monkeypatch) -> None:
    original = stage_fit.build_trainer
    monkeypatch.setattr(
        stage_fit,
        "build_trainer",
        lambda *a, extra_callbacks=None, **k: original(*a, extra_callbacks=[*extra_callbacks, _CtrlCInFinetune()], **k),
    )
    code, out, err = cli(*_two_stage(tmp_path))
    assert code == 130, err
    assert "stage 2 'finetune': interrupted after 1 of 3 epochs" in out
    assert "of the weights kept so far (interrupted)" in out
    assert "stage 'finetune' did not finish: the run keeps the best weights saved so far (best.ckpt)" in out
    assert "interrupted: stage 2 'finetune' after 1 of 3 epochs; the last finished epoch is saved" in out
    assert "improvement" not in out + err
    meta = read_json(tmp_path / "runs" / "two" / "run.json")
    assert "improvement" not in meta and meta["stages"][-1]["test_acc"] is not None


def test_ctrl_c_during_feature_extraction_says_what_stopped(cli, tmp_path: Path, monkeypatch) -> None:
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what Ctrl-C raises during the feature pass, before stage 1's first epoch

    monkeypatch.setattr(stage_data, "cache_features", interrupted)
    code, out, err = cli(*_two_stage(tmp_path))
    run = tmp_path / "runs" / "two"
    assert code == 130, err
    assert (
        "interrupted: during feature extraction of stage 1 'frozen', before its first epoch: nothing was "
        "trained yet, so nothing is lost; it is redone on resume"
    ) in out
    assert f"resume with: cnnlab train --resume {run}" in out and "between epochs" not in out


def test_a_taken_name_says_which_folder_the_run_got(cli, tmp_path: Path, run_copy: Path) -> None:
    # The name is taken by a finished run: a copy of the session's trained run, tmp_path/runs/base.
    code, _, err = cli("train", "digits", "--epochs", "1", "--runs-dir", tmp_path / "runs", "--name", "base")
    assert code == 0, err
    taken, got = run_copy, tmp_path / "runs" / "base-2"
    note = (
        f"run folder '{taken}' exists, so this run is '{got}' (to continue that run instead: "
        f"cnnlab train --resume {taken})"
    )
    assert f"warning: {note}" in err
    meta = read_json(got / "run.json")
    assert meta["name"] == "base-2" and meta["notes"] == [note] and "notes" not in read_json(taken / "run.json")


def test_many_classes_are_abbreviated_and_uneven_counts_given_as_a_range() -> None:
    import torch

    from cnnlab.data.types import ImageSet, PreparedData
    from cnnlab.training.console import classes_text, split_text

    labels = torch.tensor([i % 30 for i in range(95)])  # 30 classes: 3 or 4 images each
    train = ImageSet(torch.zeros(95, 3, 8, 8, dtype=torch.uint8), labels, [f"x:{i}" for i in range(95)])
    data = PreparedData(
        {"train": train, "val": train, "test": train},
        [f"class{i:02d}" for i in range(30)],
        "x",
        held_out=("val", "test"),
    )
    assert classes_text(data) == (
        "30: " + ", ".join(f"class{i:02d}" for i in range(12)) + ", … 18 more; 3 to 4 train images per class"
    )
    held = "(val and test held out of the images), stratified, seed 7"
    assert split_text(data, 7) == f"95 train / 95 val / 95 test {held}"


def test_an_interruption_before_a_stage_trains_says_what_the_run_keeps() -> None:
    from cnnlab.training.console import interruption_text
    from cnnlab.training.stage_plan import Stage

    finetune = Stage("finetune", 5, 1e-4, "top")
    assert interruption_text("the caching of the frozen layers' output", finetune, 2, ["frozen"], False) == (
        "during the caching of the frozen layers' output of stage 2 'finetune', before its first epoch: finished "
        "stage 'frozen' saved; it is redone on resume"
    )
    frozen = Stage("frozen", 50, 1e-3, "head")
    assert "the epochs trained before are saved" in interruption_text("feature extraction", frozen, 1, [], True)


def _record(name: str, right: int, test: float | None, done: bool = True, replaced: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "epochs": 3,
        "seconds": 1.5,
        "test_acc": test,
        "done": done,
        "replaced_best": replaced,
        "val_at_best": {"epoch": 2, "loss": 0.5, "accuracy": right / 100, "errors": 100 - right, "images": 100},
    }


def test_results_say_which_weights_were_kept_and_claim_no_gain_for_unkept_or_unfinished_stages() -> None:
    from cnnlab.training.console import results_lines, stage_end
    from cnnlab.training.record import RunRecord, StageRecord

    frozen = _record("frozen", 82, 0.87)
    kept = {
        "stages": [frozen, _record("finetune", 85, 0.90)],
        "kept": {"stage": "finetune"},
        "improvement": "improvement from fine-tuning: +3.00 points",
    }
    lines = results_lines(RunRecord.from_json(kept))
    assert lines[1].endswith("test acc 90.00%  <- kept") and lines[-1] == "improvement from fine-tuning: +3.00 points"
    not_kept = {
        "stages": [frozen, _record("finetune", 82, 0.87, replaced=False)],
        "kept": {"stage": "frozen"},
        "improvement": "improvement from fine-tuning: +0.00 points",
    }
    lines = results_lines(RunRecord.from_json(not_kept))
    assert lines[0].endswith("test acc 87.00%  <- kept")
    assert "not kept (no better on validation than stage 'frozen'), so not scored on test" in lines[1]
    assert lines[-1] == "fine-tuning kept no weights: the model is stage 'frozen''s"
    unfinished = {"stages": [frozen, _record("finetune", 84, 0.88, done=False)]}
    lines = results_lines(RunRecord.from_json(unfinished))
    assert "test acc 88.00% of the weights kept so far (interrupted)" in lines[1]
    assert lines[-1].startswith("stage 'finetune' did not finish") and not any("improvement" in x for x in lines)
    assert stage_end(StageRecord(name="train", epochs=0, seconds=0.2), 1, 5, interrupted=True) == (
        "stage 1 'train': interrupted after 0 of 5 epochs in 0.2 s; no validation epoch finished"
    )
