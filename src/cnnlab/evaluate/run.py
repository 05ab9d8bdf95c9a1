"""Whole-run evaluation: after training, and again later from the run folder alone."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import RunConfig
from cnnlab.data.builtin import BUILTIN_NAMES, load_builtin
from cnnlab.data.decode import IMAGE_EXTENSIONS
from cnnlab.data.discover import discover
from cnnlab.data.folder import decode_files
from cnnlab.data.prepare import InputNeeds, convert_images, prepare_data
from cnnlab.data.types import ImageSet
from cnnlab.errors import CnnlabError
from cnnlab.evaluate.evaluator import evaluate_split, write_training_figures
from cnnlab.evaluate.report import write_report
from cnnlab.train.checkpoint import TrainedModel, load_trained
from cnnlab.train.fit import FitResult, TrainingInterrupted, fit, resume
from cnnlab.train.run_dir import RunFiles, open_run, read_run_config, update_meta

log = logging.getLogger("cnnlab")


def _side(trained: TrainedModel) -> int:
    size = trained.image_size
    return size if isinstance(size, int) else int(size[0])


def finish_run(result: FitResult) -> dict[str, Any]:
    """Evaluates a freshly trained model on its test split and writes figures and report."""
    started = time.perf_counter()
    files, data = result.files, result.data
    test = data.splits["test"]
    metrics = evaluate_split(
        result.module.model, result.module.normalize, test, data.class_names, files.root,
        extra={"best_val_loss": result.meta["stages"][-1].get("best_val_loss")},
    )
    counts = {name: split["per_class"] for name, split in data.summary()["splits"].items()}
    write_training_figures(files.root, data.splits["train"], data.class_names, counts, result.config.augment)
    timing = dict(result.meta.get("timing", {}))
    timing["evaluate_seconds"] = round(time.perf_counter() - started, 2)
    timing["total_seconds"] = round(timing.get("train_seconds", 0) + timing["evaluate_seconds"], 2)
    update_meta(files, status="completed", timing=timing)
    write_report(files.root)
    return metrics


def train_and_evaluate(
    config: RunConfig | None, command: str, resume_path: str | None = None
) -> tuple[RunFiles, dict[str, Any]]:
    """``cnnlab train``: fit (or resume), then score the best weights on the test split.

    Raises:
        TrainingInterrupted: after Ctrl-C, once the report of what was done is written.
    """
    try:
        result = resume(resume_path) if resume_path else fit(config, command)
    except TrainingInterrupted as stop:
        finish_interrupted(stop.result)
        raise
    return result.files, finish_run(result)


def finish_interrupted(result: FitResult) -> None:
    """Scores what the interrupted run has (its best checkpoint so far) and writes the report."""
    files = result.files
    if files.best.is_file() or files.last.is_file():
        test = result.data.splits["test"]
        evaluate_split(result.module.model, result.module.normalize, test, result.data.class_names, files.root)
    counts = {name: split["per_class"] for name, split in result.data.summary()["splits"].items()}
    write_training_figures(files.root, result.data.splits["train"], result.data.class_names, counts,
                           result.config.augment)
    write_report(files.root)


def _other_data(source: str, trained: TrainedModel) -> ImageSet:
    """Every image of ``source`` (its test split if it has one), labelled by the run's classes."""
    channels, side = trained.channels, _side(trained)
    if source in BUILTIN_NAMES:
        pool, test, names = load_builtin(source)
        image_set = test if test is not None else pool
        image_set.images = convert_images(image_set.images, channels, side)
        files = [(image_set.ids[i], names[int(label)]) for i, label in enumerate(image_set.labels)]
    else:
        listing = discover(Path(source).expanduser(), IMAGE_EXTENSIONS)
        files = listing.files.get("test") or [f for split in listing.files.values() for f in split]
        image_set = None
    unknown = sorted({label for _, label in files} - set(trained.class_names))
    if unknown:
        raise CnnlabError(
            f"'{source}' has class '{unknown[0]}' that the model was not trained on "
            f"(it knows: {', '.join(trained.class_names[:10])}{'...' if len(trained.class_names) > 10 else ''})"
        )
    index = {name: i for i, name in enumerate(trained.class_names)}
    if image_set is not None:
        image_set.labels = torch.tensor([index[label] for _, label in files])
        return image_set
    decoded, skipped = decode_files([(p, index[label]) for p, label in files], channels, side, workers=4)
    if skipped:
        log.warning("%d unreadable files skipped in %s (first: %s: %s)", len(skipped), source, skipped[0].path, skipped[0].reason)
    if len(decoded) == 0:
        raise CnnlabError(f"no usable image in '{source}'")
    return decoded


def evaluate_run(run_path: str | Path, data: str | None = None) -> tuple[Path, dict[str, Any]]:
    """``cnnlab evaluate``: re-scores a run on its own test split, or on another data set.

    Results for another data set go to ``<run>/eval/<data-name>/`` so the run's own stay intact.

    Returns:
        (folder written, metrics dict).
    """
    files = open_run(run_path)
    trained = load_trained(files)
    if data is None:
        config = read_run_config(files)
        side = _side(trained)
        prepared = prepare_data(
            replace(config.data, image_size=side, channels=trained.channels), config.train.seed,
            InputNeeds(trained.channels, side),
        )
        test = prepared.splits["test"]
        expected = trained.meta["data"]["splits"]["test"].get("fingerprint")
        if expected and expected != test.fingerprint():
            log.warning("the data has changed since training: the test split is not the same images")
        out_dir = files.root
    else:
        test = _other_data(data, trained)
        out_dir = files.root / "eval" / re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(data.rstrip("/\\")).name or data)
    metrics = evaluate_split(trained.model, trained.normalize, test, trained.class_names, out_dir,
                             extra={"data": data or trained.meta["data"]["source"]})
    if data is None:
        write_report(files.root)
    return out_dir, metrics
