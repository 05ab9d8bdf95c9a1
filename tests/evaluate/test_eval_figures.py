"""Every figure is written as a non-empty PNG of the expected pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.evaluate import figures as F

DPI = F.DPI


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a written PNG, checking it is a real, non-empty image."""
    assert path.is_file() and path.stat().st_size > 1000
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


def px(inches: float) -> int:
    return int(round(inches * DPI))


@pytest.fixture()
def data() -> dict:
    rng = np.random.default_rng(0)
    n, k = 40, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {"y": y, "probs": probs, "names": ["apple", "banana", "cherry", "a-very-long-class-name-indeed"],
            "rgb": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
            "gray": rng.integers(0, 256, (n, 1, 12, 12), dtype=np.uint8)}


def test_history_with_stages_lr_changes_and_gaps(tmp_path: Path) -> None:
    h = pd.DataFrame({
        "epoch": range(6), "train_loss": [2.0, 1.5, 1.2, 0.9, 0.7, 0.6], "train_acc": [0.3, 0.5, 0.6, 0.7, 0.8, 0.85],
        "val_loss": [2.1, np.nan, 1.3, 1.0, 0.8, 0.75], "val_acc": [0.3, np.nan, 0.55, 0.65, 0.75, 0.8],
        "lr": [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5], "stage": ["frozen"] * 3 + ["finetune"] * 3,
    })
    assert png_size(F.plot_history(h, tmp_path / "h.png")) == (px(11), px(4.2))
    # Only some columns, epochs restarting per stage, no stage or lr: still a figure.
    partial = pd.DataFrame({"epoch": [0, 1, 0, 1], "val_acc": [0.5, 0.6, 0.7, 0.8]})
    assert png_size(F.plot_history(partial, tmp_path / "p.png")) == (px(11), px(4.2))
    with pytest.raises(CnnlabError, match="empty"):
        F.plot_history(pd.DataFrame(), tmp_path / "e.png")


def test_confusion_matrices_and_bars(tmp_path: Path, data: dict) -> None:
    cm = np.array([[8, 1, 0, 1], [2, 7, 1, 0], [0, 0, 9, 1], [0, 3, 0, 7]])
    side = max(4.5, 0.38 * 4 + 2.5)
    for norm in (False, True):
        out = F.plot_confusion_matrix(cm, data["names"], tmp_path / f"cm{norm}.png", normalize=norm)
        assert png_size(out) == (px(side + 1), px(side))
    pairs = [("banana", "apple", 2), ("a-very-long-class-name-indeed", "banana", 3)]
    assert png_size(F.plot_most_confused(pairs, tmp_path / "mc.png"))[0] == px(7)
    assert png_size(F.plot_most_confused([], tmp_path / "mc0.png"))[0] == px(7)
    recall = {"apple": 0.8, "banana": 0.7, "cherry": 0.9, "durian": 0.3}
    assert png_size(F.plot_per_class_accuracy(recall, tmp_path / "pca.png")) == (px(7), px(2.5))
    counts = {"train": {"apple": 50, "banana": 40}, "val": {"apple": 5, "banana": 4}, "test": {"apple": 6}}
    assert png_size(F.plot_class_counts(counts, tmp_path / "cc.png")) == (px(6), px(4.5))


def test_120_class_confusion_matrix_stays_readable(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    k = 120
    cm = rng.poisson(0.2, (k, k)) + np.diag(rng.integers(5, 20, k))
    out = F.plot_confusion_matrix(cm, [f"species_{i:03d}" for i in range(k)], tmp_path / "big.png", normalize=True)
    w, h = png_size(out)
    # Only the 30 most-confused classes are drawn, so the figure is bounded, not 120 rows tall.
    assert w <= px(15) and h <= px(14)
    assert F._confused_subset(cm, F.MAX_CM_CLASSES).size == F.MAX_CM_CLASSES


def test_image_grids_rgb_and_gray(tmp_path: Path, data: dict) -> None:
    y, probs = data["y"], data["probs"]
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    out = F.plot_misclassified(data["rgb"][:7], y[:7], pred[:7], conf[:7], data["names"], tmp_path / "mis.png")
    assert png_size(out) == (px(2.2 * 3 + 0.4), px(2.4 * 3 + 0.5))  # 7 images: 3 x 3 grid
    empty = F.plot_misclassified(data["rgb"][:0], [], [], [], data["names"], tmp_path / "mis0.png")
    assert png_size(empty) == (px(2.6), px(2.9))
    out = F.plot_samples_per_class(data["gray"], y, data["names"], tmp_path / "s.png", per_class=3)
    assert png_size(out) == (px(1.1 * 3 + 1.4), px(1.1 * 4 + 0.6))
    with pytest.raises(CnnlabError, match="C = 1 or 3"):
        F.plot_samples_per_class(data["rgb"][:, :2], y, data["names"], tmp_path / "bad.png", per_class=2)


def test_reliability(tmp_path: Path, data: dict) -> None:
    assert png_size(F.plot_reliability(data["y"], data["probs"], tmp_path / "r.png", bins=8)) == (px(6), px(6))
