"""Scores a trained model on a split and writes the numbers and pictures of the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from cnnlab.augment.options import AugmentConfig
from cnnlab.augment.preview import preset_preview
from cnnlab.data.loaders import eval_batch_size
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet
from cnnlab.evaluate import figures
from cnnlab.models.outputs import as_class_logits
from cnnlab.evaluate.compare import load_history
from cnnlab.evaluate.metrics import MetricAccumulator, classification_report_text, most_confused_pairs
from cnnlab.io import atomic_write_json, atomic_write_text

MAX_KEPT_PROBS = 20_000_000  # probabilities kept for the reliability diagram (~80 MB as float32)


def batched_probs(
    model: nn.Module, normalize: Normalize, images: torch.Tensor, batch_size: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yields (start, softmax probabilities) per batch of uint8 ``images``: memory stays flat."""
    device = next(model.parameters()).device
    batch_size = batch_size or eval_batch_size(images.shape, device)
    normalize = normalize.to(device)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(device, non_blocking=True)
            logits = as_class_logits(model(normalize(Normalize.to_unit(batch))))
            yield start, torch.softmax(logits.float(), dim=1).cpu().numpy()


def evaluate_split(
    model: nn.Module,
    normalize: Normalize,
    image_set: ImageSet,
    class_names: list[str],
    out_dir: Path,
    split: str = "test",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metrics, ``classification_report.txt`` and the result figures for one split.

    Returns:
        The metrics dict, also written to ``out_dir/metrics.json`` under ``split``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = image_set.labels.numpy()
    accumulator = MetricAccumulator(len(class_names), keep_hardest=25)
    keep_probs = len(labels) * len(class_names) <= MAX_KEPT_PROBS
    kept, predictions = [], np.empty(len(labels), dtype=np.int64)
    for start, probs in batched_probs(model, normalize, image_set.images):
        accumulator.update(labels[start : start + len(probs)], probs)
        predictions[start : start + len(probs)] = probs.argmax(1)
        if keep_probs:
            kept.append(probs)
    metrics = accumulator.compute(class_names)
    atomic_write_json(out_dir / "metrics.json", {split: metrics, **(extra or {})})
    atomic_write_text(
        out_dir / "classification_report.txt",
        classification_report_text(labels, predictions, class_names) + "\n",
    )
    cm = np.asarray(metrics["confusion_matrix"])
    figures.plot_confusion_matrix(cm, class_names, out_dir / "confusion_matrix.png")
    figures.plot_confusion_matrix(cm, class_names, out_dir / "confusion_matrix_normalized.png", normalize=True)
    figures.plot_most_confused(most_confused_pairs(cm, class_names), out_dir / "most_confused.png")
    figures.plot_per_class_accuracy(
        {name: row["recall"] for name, row in metrics["per_class"].items()}, out_dir / "per_class_accuracy.png"
    )
    hardest = accumulator.hardest()
    misclassified = out_dir / "misclassified.png"
    if hardest:
        index = [row["index"] for row in hardest]
        figures.plot_misclassified(
            image_set.images[index].numpy(),
            [row["true"] for row in hardest],
            [row["pred"] for row in hardest],
            [row["confidence"] for row in hardest],
            class_names,
            misclassified,
        )
    else:
        misclassified.unlink(missing_ok=True)  # nothing wrong any more: no stale grid
    if keep_probs:
        figures.plot_reliability(labels, np.concatenate(kept), out_dir / "reliability.png")
    return metrics


def write_training_figures(
    run_dir: Path, train_set: ImageSet, class_names: list[str], counts: dict, augment: AugmentConfig | None = None
) -> None:
    """History curves, the sample grid, class counts and (when used) the augmentation preview."""
    history = load_history(run_dir)
    if len(history):  # empty when interrupted before the first epoch ended
        figures.plot_history(history, run_dir / "history.png")
    per_class = [(train_set.labels == c).nonzero()[:8, 0] for c in range(len(class_names))]
    index = torch.cat(per_class)  # a few of each class: no need to pass the whole split
    figures.plot_samples_per_class(
        train_set.images[index].numpy(), train_set.labels[index].numpy(), class_names, run_dir / "samples.png"
    )
    figures.plot_class_counts(counts, run_dir / "class_counts.png")
    if augment is not None and augment != AugmentConfig():
        picks = [train_set.images[int(i)].permute(1, 2, 0).numpy() for i in index[:: max(1, len(index) // 4)][:4]]
        preset_preview(picks, augment, draws=6, out=run_dir / "augmentation.png")
