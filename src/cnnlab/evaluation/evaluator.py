"""Scores a trained model on a split and writes the numbers and pictures of a run folder."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.aside import Aside
from cnnlab.augment.meaning import mirror_warning
from cnnlab.config import AugmentConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import figures
from cnnlab.evaluation.metrics import MetricAccumulator, classification_report_text, most_confused_pairs
from cnnlab.figures import plot_class_counts, plot_curves, plot_samples_per_class
from cnnlab.io import atomic_write_json, atomic_write_text
from cnnlab.models.inference import predict_probs
from cnnlab.models.tta import tta_probs, views_of
from cnnlab.phases import phase
from cnnlab.progress import Progress
from cnnlab.training.history import load_history
from cnnlab.training.record import RunRecord
from cnnlab.training.run_dir import ResultFiles, RunFiles

log = logging.getLogger("cnnlab")

MAX_KEPT_PROBS = 20_000_000  # probabilities kept for the reliability diagram (~80 MB as float32)
HARDEST = 25  # misclassified images shown


def draw_metric_figures(
    files: ResultFiles, metrics: dict[str, Any], class_names: list[str], only_missing: bool = False
) -> None:
    """The figures a metrics dict alone can draw: both confusion matrices, most confused, per class."""
    cm = np.asarray(metrics["confusion_matrix"])
    recall = {name: row["recall"] for name, row in metrics["per_class"].items()}
    jobs: dict[str, Callable[[Path], Path]] = {
        "confusion_matrix": lambda out: figures.plot_confusion_matrix(cm, class_names, out),
        "confusion_matrix_normalized": lambda out: figures.plot_confusion_matrix(cm, class_names, out, True),
        "most_confused": lambda out: figures.plot_most_confused(most_confused_pairs(cm, class_names), out),
        "per_class_accuracy": lambda out: figures.plot_per_class_accuracy(recall, out),
    }
    for key, draw in jobs.items():
        if not (only_missing and files.figure(key).exists()):
            draw(files.figure(key))


def score_split(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    num_classes: int,
    autocast: torch.dtype | None = None,
    tta: bool = False,
) -> tuple[MetricAccumulator, np.ndarray | None]:
    """One pass over a split: the metric accumulator, and every probability while they fit in memory.

    ``tta``: each image's probabilities are the mean over its test-time views (``cnnlab.models.tta``).
    """
    labels = image_set.labels.numpy()
    accumulator = MetricAccumulator(num_classes, keep_hardest=HARDEST)
    keep_probs = len(labels) * num_classes <= MAX_KEPT_PROBS
    kept = []
    scorer = tta_probs if tta else predict_probs
    what = "scoring" + (" with test-time augmentation" if tta else "")
    # A bar on a terminal: with test-time views a CIFAR-sized test split takes tens of seconds.
    with Progress(f"{what} {len(labels):,} images", len(labels)) as progress:
        for start, probs in scorer(model, image_set.for_pass, normalize, autocast):
            accumulator.update(labels[start : start + len(probs)], probs.numpy())
            if keep_probs:
                kept.append(probs.numpy())
            progress.advance(len(probs))
    return accumulator, np.concatenate(kept) if keep_probs and kept else None


def evaluate_split(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    class_names: list[str],
    files: ResultFiles,
    split: str = "test",
    extra: dict[str, Any] | None = None,
    explain: bool = False,
    autocast: torch.dtype | None = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Metrics, the classification report and the result figures for one split.

    ``autocast``: the dtype the split is scored in (see ``run_autocast``; figures and Grad-CAM
    stay in full precision). With ``explain``, also the report's Explain figures (first filters, Grad-CAM on a few of
    the split's images: correct ones and the most confident mistakes found here). With ``tta``
    the split is scored a second time with test-time augmentation: metrics.json then holds both,
    ``<split>`` and ``<split>_tta``, and ``tta`` says which views and what each cost per image.

    Returns:
        The metrics dict, also written to ``files.metrics_json`` under ``split``.
    """
    files.root.mkdir(parents=True, exist_ok=True)
    labels = image_set.labels.numpy()
    with phase("evaluation"):
        began = time.perf_counter()
        accumulator, probs = score_split(model, normalize, image_set, len(class_names), autocast)
        plain_seconds = time.perf_counter() - began
        metrics = accumulator.compute(class_names)
        results: dict[str, Any] = {split: metrics}
        if tta:
            results.update(_tta_results(model, normalize, image_set, class_names, split, autocast, plain_seconds))
        atomic_write_json(files.metrics_json, {**results, **(extra or {})})
        atomic_write_text(
            files.classification_report,
            classification_report_text(labels, accumulator.predictions(), class_names) + "\n",
        )
    with phase("figures"):
        _draw_result_figures(model, normalize, image_set, class_names, files, metrics, accumulator, probs, explain)
    return metrics


def _tta_results(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    class_names: list[str],
    split: str,
    autocast: torch.dtype | None,
    plain_seconds: float,
) -> dict[str, Any]:
    """The split scored with test-time augmentation, and what it took beside the plain pass."""
    warning = mirror_warning(class_names)
    if warning:
        log.warning(warning)
    began = time.perf_counter()
    accumulator, _ = score_split(model, normalize, image_set, len(class_names), autocast, tta=True)
    seconds = time.perf_counter() - began
    views, how = views_of(normalize, image_set.shape[-1])
    count = max(1, len(image_set))
    return {
        f"{split}_tta": accumulator.compute(class_names),
        "tta": {
            "split": split,
            "views": views,
            "how": how,
            "ms_per_image": {"plain": round(1000 * plain_seconds / count, 3), "tta": round(1000 * seconds / count, 3)},
        },
    }


def _draw_result_figures(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    class_names: list[str],
    files: ResultFiles,
    metrics: dict[str, Any],
    accumulator: Any,
    probs: Any,
    explain: bool,
) -> None:
    labels = image_set.labels.numpy()
    # On the other core meanwhile: the figures the metrics alone draw (half the time of this step).
    metric_figures = Aside(partial(draw_metric_figures, files, metrics, class_names), "metric figures")
    hardest = accumulator.hardest()
    misclassified = files.figure("misclassified")
    if hardest:
        index = [row["index"] for row in hardest]
        figures.plot_misclassified(
            normalize.view(image_set.take(index)).numpy(),  # the centre crop the model saw
            [row["true"] for row in hardest],
            [row["pred"] for row in hardest],
            [row["confidence"] for row in hardest],
            class_names,
            misclassified,
        )
    else:
        misclassified.unlink(missing_ok=True)  # nothing wrong any more: no stale grid
    if probs is not None:
        figures.plot_reliability(labels, probs, files.figure("reliability"))
    if explain:
        draw_explain_figures(model, normalize, image_set, accumulator.predictions(), hardest, class_names, files)
    metric_figures.join()


def draw_explain_figures(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    predictions: np.ndarray,
    mistakes: list[dict[str, Any]],
    class_names: list[str],
    files: ResultFiles,
    scope: str = "",
) -> None:
    """The report's Explain figures; a failure is a warning, since the run's results are already written."""
    from cnnlab.explain.report import write_explain_figures

    try:
        write_explain_figures(model, normalize, image_set, predictions, mistakes, class_names, files, scope)
    except (CnnlabError, RuntimeError, ValueError) as exc:
        log.warning("the Explain figures could not be drawn (%s)", exc)


def draw_history(files: RunFiles) -> None:
    """history.png from metrics.csv (nothing when no epoch has finished yet)."""
    history = load_history(files.metrics_csv)
    if len(history):
        plot_curves({files.root.name: history}, files.figure("history"), "Training history")


def write_training_figures(
    files: RunFiles, train_set: ImageSet, class_names: list[str], run: RunRecord, augment: AugmentConfig | None = None
) -> None:
    """History curves, the sample grid, class counts and (when used) the augmentation preview."""
    from cnnlab.augment.preview import preset_preview

    draw_history(files)
    per_class = [(train_set.labels == c).nonzero()[:8, 0] for c in range(len(class_names))]
    index = torch.cat(per_class)  # a few of each class: no need to pass the whole split
    plot_samples_per_class(
        train_set.take(index).numpy(), train_set.labels[index].numpy(), class_names, files.figure("samples")
    )
    plot_class_counts(run.data.class_counts(), files.figure("class_counts"))
    if augment is not None and augment != AugmentConfig():
        picks = [image.permute(1, 2, 0).numpy() for image in train_set.take(index[:: max(1, len(index) // 4)][:4])]
        preset_preview(picks, augment, draws=6, out=files.figure("augmentation"))
