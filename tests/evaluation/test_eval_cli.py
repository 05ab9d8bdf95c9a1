"""``cnnlab evaluate`` on other data, and the TensorBoard event files of a run."""

from __future__ import annotations

import shutil

import pytest

from conftest import read_json, write_shapes_folder


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    from cnnlab.cli.main import main

    root = tmp_path_factory.mktemp("evalcli")
    data = write_shapes_folder(root / "shapes")
    assert (
        main(
            ["train", str(data), "--epochs", "4", "--batch-size", "16", "--runs-dir", str(root / "runs"), "--name", "s"]
        )
        == 0
    )
    return root / "runs" / "s", data


def test_evaluate_on_another_folder_writes_its_own_results(cli, shapes_run, tmp_path):
    run, _ = shapes_run
    other = write_shapes_folder(tmp_path / "other-shapes", per_class=6, seed=5)
    shutil.rmtree(other / "middle")  # a subset of the classes is fine
    code, _, err = cli("evaluate", run, "--data", other)
    assert code == 0, err
    results = run / "eval" / "other-shapes"
    metrics = read_json(results / "metrics.json")
    assert metrics["test"]["num_samples"] == 12
    assert (results / "confusion_matrix.png").is_file()
    assert read_json(run / "metrics.json")["test"]["num_samples"] != 12  # the run's own results stay


def test_evaluate_on_a_folder_with_unknown_classes_is_a_clear_error(cli, shapes_run, tmp_path):
    run, _ = shapes_run
    other = write_shapes_folder(tmp_path / "other", per_class=3)
    (other / "left").rename(other / "diagonal")
    code, _, err = cli("evaluate", run, "--data", other)
    assert code == 2
    assert "'diagonal'" in err and "not trained on" in err


def test_tensorboard_can_read_the_event_files(shapes_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = shapes_run
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"val_loss", "val_acc", "train_loss"} <= set(tags)
    assert len(events.Scalars("val_loss")) == 4
