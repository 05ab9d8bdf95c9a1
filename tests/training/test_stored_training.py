"""Training from the record store on disk: the same run as from memory, peak memory on record and bounded."""

from __future__ import annotations

import csv
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import read_json

pytestmark = pytest.mark.usefixtures("own_cache")


def test_disk_and_memory_stores_give_the_same_first_epoch(cli, shapes_folder, tmp_path):
    from cnnlab.config import build_config
    from cnnlab.training.run_fit import fit

    runs = tmp_path / "runs"
    code, _, err = cli(
        "train",
        shapes_folder,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--deterministic",
        "--seed",
        "7",
        "--image-store",
        "disk",
        "--runs-dir",
        runs,
        "--name",
        "disk",
    )
    assert code == 0, err
    assert list((tmp_path / "cache" / "records").glob("*.u8"))  # the run really read the store
    config = build_config(
        data=str(shapes_folder),
        epochs=1,
        batch_size=16,
        deterministic=True,
        seed=7,
        image_store="memory",
        runs_dir=str(runs),
        name="memory",
    )
    assert not fit(config, "test").data.splits["train"].stored
    histories = [list(csv.DictReader((runs / name / "metrics.csv").open())) for name in ("memory", "disk")]
    losses = [[row["train_loss"] for row in history if row["train_loss"]] for history in histories]
    assert losses[0] == losses[1] and len(losses[0]) == 1  # the first epoch's loss, to the last digit
    assert histories[0] == histories[1]
    peaks = read_json(runs / "disk" / "run.json")["memory"]["peak_rss_mb"]
    assert len(peaks) == 1 and 50 < peaks[0] < 64_000
    assert "Peak memory" in (runs / "disk" / "report.html").read_text()


_TRAIN = """
import sys
from cnnlab.config import build_config
from cnnlab.training.run_fit import fit
fit(build_config(data=sys.argv[1], image_store="disk", epochs=1, batch_size=64, model="simple_cnn",
                 runs_dir=sys.argv[2], name="small"), "test")
"""


def test_peak_memory_of_training_on_thousands_of_small_images_stays_bounded(tmp_path):
    """A process of its own, so the peak is the run's: 2,400 JPEGs at 16 px trained from the store."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for i in range(1200):
            pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            pixels[:, :, 0 if name == "a" else 2] = 255
            Image.fromarray(pixels).save(tmp_path / "data" / name / f"{i}.jpg")
    result = subprocess.run(
        [sys.executable, "-c", _TRAIN, str(tmp_path / "data"), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    run = read_json(tmp_path / "runs" / "small" / "run.json")
    assert run["data"]["splits"]["train"]["count"] > 1900
    peak = run["memory"]["peak_rss_mb"][0]
    # torch + Lightning alone take ~500-900 MiB (more with two threads' arenas); far below what holding
    # thousands of 224-px images would take, and the 3 GB per process
    assert 100 < peak < 2500, f"peak resident memory {peak} MiB"
