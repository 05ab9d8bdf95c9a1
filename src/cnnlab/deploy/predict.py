"""Classifies image files with a trained run, using the run's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.data.discover import expand_inputs
from cnnlab.data.folder import decode_files
from cnnlab.models.inference import predict_probs
from cnnlab.train.checkpoint import load_trained
from cnnlab.train.run_dir import open_run, read_run_config


def top_k(probs: torch.Tensor, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of one probability row, most probable first."""
    values, order = probs.topk(min(k, len(class_names)))
    return [{"class": class_names[int(c)], "probability": float(v)} for v, c in zip(values, order)]


def predict_paths(run: str | Path, inputs: list[str], top_k_classes: int = 3) -> list[dict[str, Any]]:
    """Top-k classes per image: ``[{path, top: [{class, probability}], error}]``.

    Files and folders are decoded in parallel (and through the decoded-image cache), as for
    training; unreadable files get an ``error`` and an empty ``top`` rather than stopping the batch.
    """
    files = open_run(run)
    trained = load_trained(files)
    paths = expand_inputs(inputs)
    workers = read_run_config(files).data.workers
    decoded, skipped = decode_files([(path, i) for i, path in enumerate(paths)], trained.channels, trained.side,
                                    workers)
    rows: list[dict[str, Any]] = [{"path": str(p), "top": [], "error": None} for p in paths]
    position = {str(path): i for i, path in enumerate(paths)}
    for item in skipped:
        rows[position[item.path]]["error"] = item.reason
    positions = decoded.labels.tolist()  # the label slot carries each image's position in ``paths``
    for start, probs in predict_probs(trained.model, decoded.images, trained.normalize):
        for offset, row_probs in enumerate(probs):
            rows[positions[start + offset]]["top"] = top_k(row_probs, trained.class_names, top_k_classes)
    return rows
