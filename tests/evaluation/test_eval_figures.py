"""Every figure is written as a non-empty PNG of the expected pixel size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.evaluation import figures as F
from conftest import png_size, px


@pytest.fixture
def data() -> dict:
    rng = np.random.default_rng(0)
    n, k = 40, 4
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return {
        "y": y,
        "probs": probs,
        "names": ["apple", "banana", "cherry", "a-very-long-class-name-indeed"],
        "rgb": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
        "gray": rng.integers(0, 256, (n, 1, 12, 12), dtype=np.uint8),
    }


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
    with pytest.raises(CnnlabError, match="C = 1 or 3"):
        F.plot_misclassified(data["rgb"][:2, :2], y[:2], pred[:2], conf[:2], data["names"], tmp_path / "bad.png")


def test_reliability(tmp_path: Path, data: dict) -> None:
    assert png_size(F.plot_reliability(data["y"], data["probs"], tmp_path / "r.png", bins=8)) == (px(6), px(6))


def _drawn(monkeypatch: pytest.MonkeyPatch, draw, *args):
    """The figure a plot_* function draws, laid out as saved (save_figure captured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    import cnnlab.figures

    captured = []

    def keep(fig, out, title=None):
        if title:
            fig.suptitle(title)
        captured.append(fig)
        return out

    monkeypatch.setattr(F, "save_figure", keep)
    monkeypatch.setattr(cnnlab.figures, "save_figure", keep)
    draw(*args)
    (fig,) = captured
    FigureCanvasAgg(fig).draw()
    return fig


def test_per_class_accuracy_legend_covers_no_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Perfect classes are full-width bars at the bottom: where a "lower right" legend used to sit.
    recall = {"bumpy": 0.67, "blotchy": 0.79, "braided": 0.88, "banded": 1.0, "cracked": 1.0}
    fig = _drawn(monkeypatch, F.plot_per_class_accuracy, recall, tmp_path / "pca.png")
    (ax,) = fig.axes
    legend = ax.get_legend().get_window_extent()
    bars = [patch.get_window_extent() for patch in ax.patches]
    assert len(bars) == len(recall)
    assert not any(legend.overlaps(bar) for bar in bars)
    assert "mean 86.8%" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert not legend.overlaps(fig._suptitle.get_window_extent())  # above the bars, below the title
