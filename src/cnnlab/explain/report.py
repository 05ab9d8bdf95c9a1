"""The run report's Explain figures: the first filters, and Grad-CAM on a few scored test images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet
from cnnlab.errors import plural
from cnnlab.explain.cam import cam_session
from cnnlab.explain.commands import filters_figure
from cnnlab.explain.layers import gradcam_layer, probe, sample_input
from cnnlab.explain.model_figures import CamPanel, plot_gradcam
from cnnlab.training.run_dir import ResultFiles

CORRECT_SHOWN = 3  # a row of right answers, one class after another...
MISTAKES_SHOWN = 3  # ...and a row of the most confident wrong ones


def report_picks(
    labels: np.ndarray, predictions: np.ndarray, mistakes: Sequence[dict[str, Any]]
) -> tuple[list[int], int]:
    """Test indices to explain: correct ones from as many classes as possible, then the most confident
    mistakes (``mistakes`` as ``MetricAccumulator.hardest()`` gives them). Returns (indices, number correct)."""
    correct_by_class: dict[int, list[int]] = {}
    for index in np.flatnonzero(np.asarray(predictions) == np.asarray(labels)).tolist():
        correct_by_class.setdefault(int(labels[index]), []).append(index)
    correct: list[int] = []
    queues = [list(reversed(q)) for _, q in sorted(correct_by_class.items())]
    while len(correct) < CORRECT_SHOWN and any(queues):
        for queue in queues:  # round robin over classes
            if queue and len(correct) < CORRECT_SHOWN:
                correct.append(queue.pop())
    wrong = [int(m["index"]) for m in sorted(mistakes, key=lambda m: -float(m["confidence"]))][:MISTAKES_SHOWN]
    return correct + wrong, len(correct)


def write_explain_figures(
    model: nn.Module,
    normalize: Normalize,
    test: ImageSet,
    predictions: np.ndarray,
    mistakes: Sequence[dict[str, Any]],
    class_names: list[str],
    files: ResultFiles,
    scope: str = "",
) -> list[Path]:
    """Draws the report's ``explain_filters`` and ``explain_gradcam`` figures into ``files``.

    Cheap: one probe pass and one Grad-CAM pass over at most six images. ``scope`` ends the
    title, e.g. " (among 200 test images)" when the picks come from a sample.
    """
    channels, side = test.shape[1], normalize.crop or test.shape[-1]
    layers = probe(model, sample_input(model, channels, side))
    written = [filters_figure(model, layers, files.figure("explain_filters"))]
    labels = test.labels.numpy()
    picks, correct = report_picks(labels, predictions, mistakes)
    if not picks:
        return written
    layer = gradcam_layer(model, layers)
    images = normalize.view(test.take(picks)).contiguous()  # the picks only (a stored split is not read whole), cropped
    with cam_session(model, layer.name, normalize) as explain:
        maps = explain(images, None)
    panels = []
    for row, index in enumerate(picks):
        predicted = int(maps.probs[row].argmax())
        panels.append(
            CamPanel(
                images[row].numpy(),
                maps.heat[row],
                Path(test.ids[index]).name,
                class_names[predicted],
                float(maps.probs[row, predicted]),
                class_names[predicted],
                class_names[int(labels[index])],
                evidence=not maps.no_evidence(row),
            )
        )
    wrong = len(picks) - correct
    title = f"Grad-CAM on {layer.name}: {plural(correct, 'correct test image')}"
    title += (f", then the {plural(wrong, 'most confident mistake')}" if wrong else ", no mistakes to show") + scope
    written.append(plot_gradcam(panels, files.figure("explain_gradcam"), title, per_row=CORRECT_SHOWN))
    return written
