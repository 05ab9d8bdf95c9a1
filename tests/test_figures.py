"""The shared figure toolkit: curves, sample grids and count bars as PNGs of the expected size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.figures import plot_class_counts, plot_curves, plot_samples_per_class
from conftest import png_size, px


def test_history_with_stages_lr_changes_and_gaps(tmp_path: Path) -> None:
    h = pd.DataFrame(
        {
            "epoch": range(6),
            "train_loss": [2.0, 1.5, 1.2, 0.9, 0.7, 0.6],
            "train_acc": [0.3, 0.5, 0.6, 0.7, 0.8, 0.85],
            "val_loss": [2.1, np.nan, 1.3, 1.0, 0.8, 0.75],
            "val_acc": [0.3, np.nan, 0.55, 0.65, 0.75, 0.8],
            "lr": [1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5],
            "stage": ["frozen"] * 3 + ["finetune"] * 3,
        }
    )
    assert png_size(plot_curves({"run": h}, tmp_path / "h.png", "History")) == (px(11), px(4.2))
    # Only some columns, no stage or lr, and two runs on one axis: still a figure.
    partial = pd.DataFrame({"epoch": [0, 1, 2, 3], "val_acc": [0.5, 0.6, 0.7, 0.8]})
    assert png_size(plot_curves({"a": partial, "b": h}, tmp_path / "p.png", "Two runs")) == (px(11), px(4.2))
    with pytest.raises(CnnlabError, match="empty"):
        plot_curves({"run": pd.DataFrame()}, tmp_path / "e.png", "Nothing")


def _lr_labels(axes) -> list[str]:
    return [t.get_text().strip() for t in axes.texts if t.get_text().strip().startswith("lr ")]


def test_lr_steps_are_named_but_a_per_epoch_schedule_is_not(tmp_path: Path) -> None:
    from cnnlab.figures import draw_curves, new_figure

    steps = pd.DataFrame({"epoch": range(8), "val_acc": np.linspace(0.5, 0.9, 8), "lr": [1e-3] * 4 + [1e-4] * 4})
    onecycle = steps.assign(lr=[1e-3, 5e-4, 1e-4, 3e-4, 1e-4, 5e-5, 2e-5, 1e-6])
    for history, labels in ((steps, ["lr 1e-04"]), (onecycle, [])):
        axes = new_figure(11, 4.2).subplots(1, 2)
        draw_curves(axes, {"run": history})
        assert _lr_labels(axes[0]) == labels


def test_one_epoch_is_drawn_on_a_whole_epoch_axis() -> None:
    from cnnlab.figures import draw_curves, new_figure

    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    draw_curves(axes, {"run": pd.DataFrame({"epoch": [1], "train_acc": [0.9], "train_loss": [0.3]})})
    assert tuple(axes[0].get_xlim()) == (0.0, 2.0)


def _transfer_history() -> pd.DataFrame:
    """As load_history returns a transfer run like dtd10's: 42 frozen epochs at one rate, then 5 of
    fine-tuning on a one-cycle schedule (a rate per epoch), epochs numbered from 1."""
    onecycle = [4e-6, 8.1e-5, 9e-5, 5.5e-5, 1.7e-5]
    return pd.DataFrame(
        {
            "epoch": range(1, 48),
            "stage": ["frozen"] * 42 + ["finetune"] * 5,
            "train_acc": np.linspace(0.3, 0.99, 47),
            "val_acc": np.linspace(0.6, 0.87, 47),
            "train_loss": np.linspace(2.1, 0.05, 47),
            "val_loss": np.linspace(1.8, 0.5, 47),
            "lr": [1e-3] * 41 + [5e-4] + onecycle,
        }
    )


def _overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of visible, non-empty texts (labels, tick labels, titles) whose boxes overlap, axes by axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    pairs = []
    for ax in fig.axes:
        texts = [t for t in [*ax.texts, *ax.get_xticklabels()] if t.get_visible() and t.get_text().strip()]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
        pairs += [(a, b) for i, (a, box) in enumerate(boxes) for b, other in boxes[i + 1 :] if box.overlaps(other)]
    return pairs


def test_a_schedule_gets_its_own_learning_rate_panel_and_nothing_piles_up() -> None:
    from cnnlab.figures import curve_axes, draw_curves, new_figure

    history = _transfer_history()
    fig = new_figure(11, 4.2)
    axes = curve_axes(fig, {"run": history})
    draw_curves(axes, {"run": history})
    assert [ax.get_title() for ax in axes] == ["Accuracy", "Loss", "Learning rate"]
    (line,) = axes[2].get_lines()[:1]
    assert list(line.get_xdata()) == list(range(1, 48)) and line.get_ydata()[-1] == pytest.approx(1.7e-5)
    assert axes[2].get_yscale() == "log"
    assert axes[0].get_lines()[0].get_xdata()[0] == 1  # epochs from 1, as the console counts them
    assert not _overlapping_texts(fig)
    # Two runs side by side: no rate panel (whose rate would it show?).
    assert len(curve_axes(new_figure(11, 4.2), {"a": history, "b": history})) == 2


def test_on_two_given_axes_a_short_schedules_rates_are_not_labelled() -> None:
    """Five changes within a few epochs are a schedule, not steps: ticks without labels (they piled up)."""
    from cnnlab.figures import draw_curves, new_figure

    fig = new_figure(11, 4.2)
    axes = fig.subplots(1, 2)
    draw_curves(axes, {"run": _transfer_history()})
    assert _lr_labels(axes[0]) == [] and not _overlapping_texts(fig)


def test_samples_and_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 40)
    names = ["apple", "banana", "cherry", "a-very-long-class-name-indeed"]
    gray = rng.integers(0, 256, (40, 1, 12, 12), dtype=np.uint8)
    out = plot_samples_per_class(gray, y, names, tmp_path / "s.png", per_class=3)
    assert png_size(out) == (px(1.1 * 3 + 1.4), px(1.1 * 4 + 0.6))
    with pytest.raises(CnnlabError, match="C = 1 or 3"):
        plot_samples_per_class(gray.repeat(2, axis=1), y, names, tmp_path / "bad.png", per_class=2)
    counts = {"train": {"apple": 50, "banana": 40}, "val": {"apple": 5, "banana": 4}, "test": {"apple": 6}}
    assert png_size(plot_class_counts(counts, tmp_path / "cc.png")) == (px(6), px(4.5))
