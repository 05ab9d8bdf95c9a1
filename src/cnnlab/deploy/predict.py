"""Classifies image files with a trained run, using the run's own preprocessing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.decode import IMAGE_EXTENSIONS, UnreadableImage, decode_image
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.evaluator import batched_probs
from cnnlab.train.checkpoint import load_trained
from cnnlab.train.run_dir import open_run


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files as given, and every image file below each folder (hidden files skipped), in order."""
    paths: list[Path] = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            paths += sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
        elif path.is_file():
            paths.append(path)
        else:
            raise CnnlabError(f"input '{text}' not found; give image files or folders")
    if not paths:
        raise CnnlabError(f"no image files found in {', '.join(inputs)}")
    return paths


def predict_paths(run: str | Path, inputs: list[str], top_k: int = 3) -> list[dict[str, Any]]:
    """Top-k classes per image: ``[{path, top: [{class, probability}], error}]``.

    Unreadable files get an ``error`` and an empty ``top`` rather than stopping the batch.
    """
    trained = load_trained(open_run(run))
    size = trained.image_size
    side = size if isinstance(size, int) else int(size[0])
    paths = expand_inputs(inputs)
    rows: list[dict[str, Any]] = [{"path": str(p), "top": [], "error": None} for p in paths]
    arrays, positions = [], []
    for i, path in enumerate(paths):
        try:
            arrays.append(decode_image(path, channels=trained.channels, size=side))
            positions.append(i)
        except UnreadableImage as exc:
            rows[i]["error"] = exc.reason
    if arrays:
        images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
        k = min(top_k, len(trained.class_names))
        for start, probs in batched_probs(trained.model, trained.normalize, images):
            for offset, row_probs in enumerate(probs):
                best = np.argsort(-row_probs)[:k]
                rows[positions[start + offset]]["top"] = [
                    {"class": trained.class_names[c], "probability": float(row_probs[c])} for c in best
                ]
    return rows
