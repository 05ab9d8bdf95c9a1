"""Classifies images with a run's model, or with an exported artifact on its own.

The preprocessing is the model's own: from the run folder, or from the metadata inside the
artifact, so an artifact copied anywhere predicts what the checkpoint does. A run folder answers
with its fastest runtime that gives the checkpoint's own outputs, INT8 only when asked for
(``deploy.runtime.fastest_runtime``); every row names the runtime that answered it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from cnnlab.data.decode import image_to_array
from cnnlab.data.discover import expand_inputs
from cnnlab.data.folder import decode_files
from cnnlab.data.normalize import Normalize
from cnnlab.data.preprocess import Preprocess
from cnnlab.deploy.runtime import open_for_prediction, torch_threads
from cnnlab.deploy.settings import PredictOptions
from cnnlab.errors import CnnlabError
from cnnlab.models.inference import predict_probs
from cnnlab.models.tta import tta_probs, views_of
from cnnlab.training.run_dir import RunFiles, read_run_config

log = logging.getLogger("cnnlab")


class Classifier(Protocol):
    """What prediction needs of a model: a TrainedModel (checkpoint) or a Served (any runtime)."""

    model: Any
    class_names: list[str]

    @property
    def normalize(self) -> Normalize: ...

    @property
    def preprocess(self) -> Preprocess: ...


def top_k(probs: torch.Tensor, class_names: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most probable classes of one probability row, most probable first."""
    values, order = probs.topk(min(k, len(class_names)))
    return [{"class": class_names[int(c)], "probability": float(v)} for v, c in zip(values, order)]


def array_to_image(array: np.ndarray) -> Image.Image:
    """An image array as PIL sees it: (H, W) or (H, W, 1|3|4), uint8 0-255 or float 0-1.

    Raises:
        CnnlabError: any other shape or value range.
    """
    values = np.asarray(array)
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[2] not in (3, 4)):
        raise CnnlabError(f"an image array must be (H, W) or (H, W, 1, 3 or 4), got shape {values.shape}")
    if values.dtype != np.uint8:
        if not np.issubdtype(values.dtype, np.floating) or values.min() < 0 or values.max() > 1:
            raise CnnlabError(
                f"an image array must be uint8 (0-255) or float in [0, 1], got {values.dtype} "
                f"from {values.min()} to {values.max()}"
            )
        values = np.round(values * 255).astype(np.uint8)
    return Image.fromarray(values)


def predict_images(
    trained: Classifier, items: Sequence[Any], k: int = 3, workers: int = 4, tta: bool = False
) -> list[dict[str, Any]]:
    """Top-k classes per image: ``[{input, top: [{class, probability}], error}]``, in order.

    ``tta``: each image's probabilities are the mean over its test-time views (``cnnlab.models.tta``).

    ``items`` may mix image files, folders (each image file in them), PIL images and arrays.
    Files are decoded in parallel (and through the decoded-image cache), as for training; an
    unreadable file gets an ``error`` and an empty ``top`` rather than stopping the batch.
    """
    rows: list[dict[str, Any]] = []
    files: list[tuple[Path, int]] = []
    in_memory: list[tuple[int, np.ndarray]] = []
    pre = trained.preprocess
    for item in items:
        if isinstance(item, (str, Path)):
            for path in expand_inputs([item]):
                files.append((path, len(rows)))
                rows.append({"input": str(path), "top": [], "error": None})
            continue
        image = item if isinstance(item, Image.Image) else array_to_image(item)
        rows.append(
            {"input": f"<image {len(rows)}: {image.width}x{image.height} {image.mode}>", "top": [], "error": None}
        )
        in_memory.append((len(rows) - 1, image_to_array(image, pre.channels, pre.stored_side, fit=pre.fit)))
    decoded, skipped = decode_files(files, pre.channels, pre.stored_side, workers, fit=pre.fit)
    row_of = {str(path): row for path, row in files}
    for item in skipped:
        rows[row_of[item.path]]["error"] = item.reason
    positions = decoded.labels.tolist() + [i for i, _ in in_memory]  # the label slot carries the row
    arrays = [torch.from_numpy(a).permute(2, 0, 1) for _, a in in_memory]
    images = torch.cat([decoded.images, torch.stack(arrays)]) if arrays else decoded.images
    scorer = tta_probs if tta else predict_probs
    for start, probs in scorer(trained.model, images, trained.normalize):
        for offset, row_probs in enumerate(probs):
            rows[positions[start + offset]]["top"] = top_k(row_probs, trained.class_names, k)
    return rows


def predict_with(target: str | Path, items: Sequence[Any], options: PredictOptions) -> list[dict[str, Any]]:
    """:func:`predict_images` with a run folder or an exported artifact; each row's ``runtime`` names
    the one that answered (a key of ``deploy.settings.RUNTIMES``), which is also logged with why.

    Args:
        target: a run folder, or a ``.onnx`` / TorchScript file written by ``cnnlab export``.
        options: ``runtime`` for a run folder: ``auto`` (the fastest with the checkpoint's own outputs),
            ``fastest`` (INT8 too when it keeps test accuracy), or pytorch, torchscript, onnx, int8;
            ``top_k``, ``tta`` and ``threads`` as ``cnnlab predict`` takes them.
    """
    k, runtime, threads, tta = options.top_k, options.runtime, options.threads, options.tta
    served, why = open_for_prediction(target, runtime, threads)
    log.info("runtime: %s; %s", served.describe(), why)
    if tta:
        log.info("test-time augmentation: %s", views_of(served.normalize, served.stored_side)[1])
    folder = Path(target).expanduser()
    decoding = {"workers": read_run_config(RunFiles(folder)).data.workers} if folder.is_dir() else {}
    with torch_threads(threads):
        rows = predict_images(served, items, k, tta=tta, **decoding)
    return [{**row, "runtime": served.runtime} for row in rows]
