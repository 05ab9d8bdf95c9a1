"""Whole-run evaluation: after training, and again later from the run folder alone."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from cnnlab.config import RunConfig
from cnnlab.data.prepare import InputNeeds, load_for_classes, prepare_data
from cnnlab.evaluation.evaluator import evaluate_split, write_training_figures
from cnnlab.evaluation.report import write_report
from cnnlab.data.types import PreparedData
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.fit import FitResult, TrainingInterrupted, fit, resume
from cnnlab.training.run_dir import ResultFiles, RunFiles, open_run, read_run_config, update_meta

log = logging.getLogger("cnnlab")


def finish_run(result: FitResult) -> dict[str, Any]:
    """Evaluates a freshly trained model on its test split and writes figures and report."""
    started = time.perf_counter()
    files, data = result.files, result.data
    metrics = evaluate_split(
        result.module.model, result.module.normalize, data.splits["test"], data.class_names, files,
        extra={"best_val_loss": result.meta["stages"][-1].get("best_val_loss")},
    )
    write_training_figures(files, data.splits["train"], data.class_names, result.meta, result.config.augment)
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
    files, data = result.files, result.data
    if files.best.is_file() or files.last.is_file():
        evaluate_split(result.module.model, result.module.normalize, data.splits["test"], data.class_names, files)
    write_training_figures(files, data.splits["train"], data.class_names, result.meta, result.config.augment)
    write_report(files.root)


def run_data(files: RunFiles, trained: TrainedModel) -> PreparedData:
    """A run's own data, split as at training and decoded as its model wants it.

    Warns when the test split is no longer the images the run was scored on.
    """
    config = read_run_config(files)
    side = trained.side
    prepared = prepare_data(replace(config.data, image_size=side, channels=trained.channels), config.train.seed,
                            InputNeeds(trained.channels, side))
    expected = trained.meta["data"]["splits"]["test"].get("fingerprint")
    if expected and expected != prepared.splits["test"].fingerprint():
        log.warning("the data has changed since training: the test split is not the same images")
    return prepared


def evaluate_run(run_path: str | Path, data: str | None = None) -> tuple[Path, dict[str, Any]]:
    """``cnnlab evaluate``: re-scores a run on its own test split, or on another data set.

    Results for another data set go to ``<run>/eval/<data-name>/`` so the run's own stay intact.

    Returns:
        (folder written, metrics dict).
    """
    files = open_run(run_path)
    trained = load_trained(files)
    config = read_run_config(files)
    out: ResultFiles = files
    if data is None:
        test = run_data(files, trained).splits["test"]
    else:
        test = load_for_classes(data, trained.class_names, trained.channels, trained.side, config.data.workers)
        out = files.evaluation(data)
    metrics = evaluate_split(trained.model, trained.normalize, test, trained.class_names, out,
                             extra={"data": data or trained.meta["data"]["source"]})
    if data is None:
        write_report(files.root)
    return out.root, metrics
