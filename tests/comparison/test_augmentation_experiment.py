"""``cnnlab experiment augmentation`` trains both arms and compares them; augmented runs show a preview."""

from __future__ import annotations

from PIL import Image

from conftest import read_json


def test_experiment_trains_both_arms_and_writes_comparison(cli, shapes_folder, tmp_path):
    runs = tmp_path / "runs"
    code, out, err = cli(
        "experiment",
        "augmentation",
        shapes_folder,
        "--epochs",
        "2",
        "--batch-size",
        "16",
        "--runs-dir",
        runs,
        "--name",
        "exp",
        "--augment",
        "light",
    )
    assert code == 0, err
    folder = runs / "exp"
    for arm in ("without", "with"):
        assert read_json(folder / arm / "run.json")["status"] == "completed"
    augmented = read_json(folder / "with" / "run.json")
    assert "augment" in (folder / "with" / "config.yaml").read_text()
    assert (folder / "with" / "augmentation.png").is_file()  # the preview of what training saw
    assert not (folder / "without" / "augmentation.png").exists()
    figure = Image.open(folder / "augmentation_experiment.png")
    assert figure.size[0] > 800
    rows = read_json(folder / "experiment.json")["rows"]
    assert [r["arm"] for r in rows] == ["without", "with"]
    assert all(r["epochs"] == 2 and 0 <= r["test_acc"] <= 1 for r in rows)
    assert "train-val gap" in out and "with augmentation" in out
    assert augmented["class_names"] == ["left", "middle", "right"]
