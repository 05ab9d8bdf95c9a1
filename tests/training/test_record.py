"""run.json through its types: today's files read and written unchanged, older ones open, nothing lost.

The fixtures (tests/fixtures/run_json/) are run.json files written by cnnlab before the typed records:
a from-scratch run and a two-stage transfer run with a refit (the same commands as
test_same_metrics, which also checks the round trip on the files its runs write now).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.data.preprocess import ModelInput, Preprocess
from cnnlab.errors import CnnlabError
from cnnlab.training.record import AttemptRecord, RefitRecord, RunRecord, StageRecord, ValScores
from cnnlab.training.run_dir import RunFiles, read_record, write_record

FIXTURES = Path(__file__).parent.parent / "fixtures" / "run_json"


def written(kind: str) -> dict:
    return json.loads((FIXTURES / f"{kind}.json").read_text())


def same_text(a: dict, b: dict) -> bool:
    """Equal as JSON text: the same keys, values and order."""
    return json.dumps(a, indent=2) == json.dumps(b, indent=2)


@pytest.mark.parametrize("kind", ["scratch", "transfer"])
def test_todays_run_json_reads_and_writes_back_unchanged(kind: str) -> None:
    raw = written(kind)
    record = RunRecord.from_json(raw)
    assert same_text(record.to_json(), raw)
    assert record.preprocess is not None and record.preprocess.to_json() == raw["preprocess"]
    assert record.extra == {} and all(stage.extra == {} for stage in record.stages)  # every key has a field


def test_the_records_are_typed_all_the_way_down() -> None:
    record = RunRecord.from_json(written("transfer"))
    assert [stage.name for stage in record.done_stages()] == ["frozen", "finetune"]
    frozen, finetune = record.stages
    assert isinstance(frozen.val_at_best, ValScores) and frozen.val_at_best.images == 15
    assert frozen.feature_cache and not finetune.replaced_best
    assert record.kept is not None and record.kept.stage == "frozen" and record.kept_stage() is frozen
    assert record.refit is not None and record.refit.done and record.refit.chosen[0].epochs == 3
    assert record.refit.stages[0].name == "refit-frozen" and record.refit.stages[0].done
    assert record.data.splits["train"].count == 39 and record.data.class_counts()["val"] == {"flower": 8, "temple": 7}
    assert record.timing.train_seconds == 6.85 and isinstance(record.attempts[0], AttemptRecord)
    assert record.memory is not None and record.memory.peak_rss_mb[0] > 0
    assert record.improvement is not None and record.improvement.startswith("improvement from fine-tuning")


def older(raw: dict) -> dict:
    """``raw`` as cnnlab wrote it before crop_pct, crop_mode, attempts, the refit and the stage's selection record."""
    old = {k: v for k, v in raw.items() if k not in ("attempts", "refit", "memory")}
    old["preprocess"] = {k: v for k, v in raw["preprocess"].items() if k not in ("crop_pct", "crop_mode")}
    old["stages"] = [
        {k: v for k, v in stage.items() if k not in ("val_at_best", "replaced_best", "select", "stage_best_val_loss")}
        for stage in raw["stages"]
    ]
    old["timing"] = {"train_seconds": raw["timing"]["train_seconds"]}
    return old


def test_an_older_run_json_opens_with_defaults_and_gains_only_its_crop() -> None:
    old = older(written("scratch"))
    record = RunRecord.from_json(old)
    assert record.preprocess is not None and record.preprocess.crop_pct == 1.0  # stored at the input size
    assert record.preprocess.crop_mode == "center" and record.preprocess.fit.mode == "center"  # as it was decoded
    assert record.preprocess.stored_side == record.preprocess.side == 8
    assert record.attempts == [] and record.refit is None and record.memory is None
    assert record.stages[0].replaced_best is None and record.stages[0].val_at_best is None  # not recorded
    assert record.kept_stage() is record.stages[0]
    # written back, the input format says its crop (1: none) and crop mode; nothing else is added
    expected = {**old, "preprocess": {**old["preprocess"], "crop_pct": 1.0, "crop_mode": "center"}}
    assert same_text(record.to_json(), expected)


def test_keys_this_version_does_not_know_are_written_back() -> None:
    raw = written("scratch")
    raw["stages"][0]["ema_decay"] = 0.999
    raw["future_section"] = {"a": [1, 2]}
    record = RunRecord.from_json(raw)
    assert record.extra == {"future_section": {"a": [1, 2]}} and record.stages[0].extra == {"ema_decay": 0.999}
    record.status = "interrupted"
    expected = {**raw, "status": "interrupted"}
    assert same_text(record.to_json(), expected)


def test_a_record_built_in_python_writes_the_keys_training_writes() -> None:
    """A new stage record has today's keys in today's order; optional ones only when set."""
    today = written("transfer")["stages"][0]
    stage = StageRecord(
        **{k: v for k, v in today.items() if k != "val_at_best"}, val_at_best=ValScores(**today["val_at_best"])
    )
    assert same_text(stage.to_json(), today)
    unfinished = StageRecord(name="train", epochs=1, seconds=1.0).to_json()
    assert "done" not in unfinished and "budget_seconds" not in unfinished and unfinished["test_acc"] is None
    assert list(AttemptRecord(started="2026-01-01T00:00:00").to_json()) == ["started"]


def test_a_changed_record_is_written_to_run_json(tmp_path: Path) -> None:
    files = RunFiles(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps(written("scratch")))
    record = read_record(files)
    record.notes.append("hello")
    record.stages[0].test_acc = 0.5
    write_record(files, record)
    again = json.loads((tmp_path / "run.json").read_text())
    assert again["notes"] == ["hello"] and again["stages"][0]["test_acc"] == 0.5
    assert list(again)[:-1] == list(written("scratch"))  # a new key goes last, the others keep their places


def test_preprocess_reads_both_image_size_shapes_and_writes_them_back() -> None:
    wide = {"image_size": [48, 64], "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3, "crop_pct": 0.875}
    pre = Preprocess.from_json(wide)
    assert pre.size == (48, 64) and pre.side == 48 and pre.has_margin and pre.stored_side == 54
    assert pre.to_json() == {
        **wide,
        "interpolation": "bilinear",
        "resize": "shorter side to size, then center crop",
        "crop_pct": 0.875,
        "crop_mode": "center",
    }
    assert pre.request() == ModelInput(3, 48, 0.875, (0.5,) * 3, (0.25,) * 3)
    assert not Preprocess.from_json({**wide, "image_size": 32, "crop_pct": 1}).has_margin


@pytest.mark.parametrize(
    "broken, says",
    [
        ({"channels": 3, "mean": [0.0], "std": [1.0]}, "image_size"),
        ({"image_size": 8, "channels": 2, "mean": [0.0], "std": [1.0]}, "not 1 or 3"),
        ({"image_size": 8, "channels": 3, "mean": [0.0], "std": [1.0], "crop_mode": "stretch"}, "crop_mode 'stretch'"),
    ],
)
def test_an_incomplete_preprocess_is_a_clear_error(broken: dict, says: str) -> None:
    with pytest.raises(CnnlabError, match=f"run.json: its 'preprocess' record is incomplete.*{says}"):
        RunRecord.from_json({**written("scratch"), "preprocess": broken})


def test_an_older_run_folder_still_opens(run_copy: Path, trained_shapes, cli) -> None:
    """A trained run whose run.json is rewritten in the older shape: predict, the report and the run list read it."""
    meta = run_copy / "run.json"
    old = older(json.loads(meta.read_text()))
    side = old["preprocess"]["image_size"]
    old["preprocess"]["image_size"] = [side, side]  # the [height, width] form
    meta.write_text(json.dumps(old))
    image = next((trained_shapes[1] / "left").glob("*.png"))
    code, out, err = cli("predict", run_copy, image)
    assert code == 0, err
    assert "left" in out
    code, _, err = cli("report", run_copy)
    assert code == 0, err
    assert "Run status" not in (run_copy / "report.html").read_text()  # completed, as it was
    code, out, err = cli("runs", "list", "--runs-dir", run_copy.parent)
    assert code == 0 and "base" in out, err
    import cnnlab

    record = cnnlab.load_run(run_copy).record
    assert record.preprocess is not None and record.preprocess.size == (side, side) and record.stages[0].done


def test_a_damaged_input_format_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(json.dumps({**written("scratch"), "preprocess": {"channels": 3}}))
    with pytest.raises(CnnlabError, match=f"{tmp_path / 'run.json'}: its 'preprocess' record is incomplete"):
        read_record(RunFiles(tmp_path))


def test_a_new_refit_record_writes_its_stage_list_and_both_test_accuracies() -> None:
    started = RefitRecord(line="refit on 54 images", images=54, done=False)
    assert list(started.to_json()) == ["line", "images", "chosen", "stages", "done"]
    assert RefitRecord(done=False, why="--refit off").to_json() == {"done": False, "why": "--refit off"}
    loaded = RefitRecord.from_json(started.to_json())
    loaded.test_acc = 0.8  # the validated model was not scored: its accuracy is written as unknown
    assert loaded.to_json()["validated_test_acc"] is None and list(loaded.to_json())[-2:] == [
        "test_acc",
        "validated_test_acc",
    ]
