"""Whole-run evaluation: after training, and again later from the run folder alone."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import cnnlab.phases as phases
from cnnlab.config import RunConfig
from cnnlab.data.prepare import InputNeeds, load_for_classes, prepare_data
from cnnlab.data.types import PreparedData
from cnnlab.evaluation.evaluator import draw_explain_figures, evaluate_split, score_split, write_training_figures
from cnnlab.evaluation.report import write_report
from cnnlab.machine import peak_rss_bytes
from cnnlab.phases import phase
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.distributed import in_processes
from cnnlab.training.fit import FitResult, TrainingInterrupted, fit, resume
from cnnlab.training.ranks import Ranks
from cnnlab.training.run_dir import FIGURES, ResultFiles, RunFiles, open_run, read_run_config, update_meta
from cnnlab.training.stage_plan import record_final_accuracy
from cnnlab.training.start import resume_config
from cnnlab.training.tracking import finish_tracking
from cnnlab.training.trainer import run_autocast

log = logging.getLogger("cnnlab")

REDRAW_SAMPLE = 200  # test images scored to pick the report's Grad-CAM images when they are redrawn


def finish_run(result: FitResult) -> dict[str, Any]:
    """Evaluates a freshly trained model on its test split and writes figures and report."""
    started = time.perf_counter()
    files, data = result.files, result.data
    metrics = evaluate_split(
        result.module.model,
        result.module.normalize,
        data.splits["test"],
        data.class_names,
        files,
        extra={"best_val_loss": result.meta["stages"][-1].get("best_val_loss")},
        explain=True,
        autocast=run_autocast(result.config.train),
    )
    scores = _final_scores(result, metrics)
    with phase("figures"):
        write_training_figures(files, data.splits["train"], data.class_names, result.meta, result.config.augment)
    result.meta.setdefault("timing", {})["evaluate_seconds"] = round(time.perf_counter() - started, 2)
    update_meta(
        files,
        status="completed",
        memory=_with_evaluation_peak(result.meta.get("memory")),
        **_time_record(result.meta),
        **scores,
    )
    with phase("report"):
        write_report(files.root)
    if result.meta.get("tracking"):
        with phase("tracking"):  # MLflow gets the report as written
            finish_tracking(files, result.meta, metrics, "FINISHED", _figures(files))
    update_meta(files, **_time_record(result.meta))
    return metrics


def _time_record(meta: dict[str, Any]) -> dict[str, Any]:
    """The run.json keys that say where the time went, brought up to now: this attempt's phases on
    its record, and ``timing`` summing every attempt's (a resumed run's work, as train_seconds counts it)."""
    attempts = meta.get("attempts") or []
    if attempts and isinstance(attempts[-1], dict):
        attempts[-1].update(phases.attempt_record())
    else:  # a run from before attempts were recorded: this command alone
        attempts = [phases.attempt_record()]
    meta["timing"] = {**(meta.get("timing") or {}), **phases.across_attempts(attempts)}
    return {"timing": meta["timing"], **({"attempts": meta["attempts"]} if meta.get("attempts") else {})}


def _figures(files: RunFiles) -> list[Path]:
    return [files.figure(key) for key in FIGURES]


def _final_scores(result: FitResult, metrics: dict[str, Any]) -> dict[str, Any]:
    """The last stage's test accuracy is the final evaluation's: the run.json keys it changes, to
    write with the next update (before the report reads them)."""
    record_final_accuracy(result.meta, metrics["accuracy"])
    return {key: result.meta[key] for key in ("stages", "improvement", "refit") if key in result.meta}


def _with_evaluation_peak(memory: dict[str, Any] | None) -> dict[str, Any]:
    """The run's per-process peaks, rank 0's raised to what evaluating took (it alone evaluates)."""
    peaks = list((memory or {}).get("peak_rss_mb") or [0])
    peaks[0] = max(peaks[0], round((peak_rss_bytes() or 0) / 2**20))
    return {**(memory or {}), "peak_rss_mb": peaks}


def train_and_evaluate(
    config: RunConfig | None, command: str, resume_path: str | None = None
) -> tuple[RunFiles, dict[str, Any]]:
    """``cnnlab train``: fit (or resume), then score the best weights on the test split.

    With several devices or nodes it runs in each of the run's processes (started here if need
    be); rank 0 alone evaluates and writes the report, the others wait for it and get its metrics.

    Raises:
        TrainingInterrupted: after Ctrl-C, once the report of what was done is written.
    """
    train_config = config.train if config is not None else resume_config(str(resume_path))[2].train
    return in_processes(train_config, _train_and_evaluate, config, command, resume_path)


def _train_and_evaluate(
    ranks: Ranks, config: RunConfig | None, command: str, resume_path: str | None
) -> tuple[RunFiles, dict[str, Any]]:
    phases.begin_unless_active()
    try:
        try:
            if resume_path:
                result = resume(resume_path)
            else:
                assert config is not None  # a new run's config, or a run folder to resume
                result = fit(config, command)
        except TrainingInterrupted as stop:
            if stop.result is not None:  # None: stopped outside an epoch, no model in hand to report on
                ranks.from_zero(partial(finish_interrupted, stop.result))
            raise
        return result.files, ranks.from_zero(lambda: finish_run(result))
    finally:
        phases.end()


def finish_interrupted(result: FitResult) -> None:
    """Scores what the interrupted run has (its best checkpoint so far) and writes the report."""
    files, data = result.files, result.data
    metrics = None
    if files.best.is_file() or files.last.is_file():
        metrics = evaluate_split(
            result.module.model,
            result.module.normalize,
            data.splits["test"],
            data.class_names,
            files,
            explain=True,
            autocast=run_autocast(result.config.train),
        )
        update_meta(files, **_final_scores(result, metrics))
    write_training_figures(files, data.splits["train"], data.class_names, result.meta, result.config.augment)
    update_meta(files, **_time_record(result.meta))
    write_report(files.root)
    finish_tracking(files, result.meta, metrics, "KILLED", _figures(files))


def run_data(files: RunFiles, trained: TrainedModel) -> PreparedData:
    """A run's own data, split as at training and decoded as its model wants it.

    Warns when the test split is no longer the images the run was scored on.
    """
    config = read_run_config(files)
    side, crop_pct = trained.side, trained.crop_pct
    prepared = prepare_data(
        replace(config.data, image_size=side, channels=trained.channels, crop_pct=crop_pct),
        config.train.seed,
        InputNeeds(trained.channels, side, crop_pct),
    )
    expected = trained.meta["data"]["splits"]["test"].get("fingerprint")
    if expected and expected != prepared.splits["test"].fingerprint():
        log.warning("the data has changed since training: the test split is not the same images")
    return prepared


def write_run_report(run_path: str | Path) -> Path:
    """``cnnlab report``: the report, first drawing the Explain figures if the run has none yet.

    Those need the model and test images, which the other figures do not: the picks (correct
    images, most confident mistakes) come from scoring up to :data:`REDRAW_SAMPLE` test images
    again, spread over the split, without rewriting any result (e.g. for runs trained before
    cnnlab drew them). A run without a checkpoint keeps a note in their place.
    """
    from cnnlab.explain.inputs import open_explained

    files = open_run(run_path)
    missing = not all(files.figure(key).is_file() for key in ("explain_filters", "explain_gradcam"))
    if missing and (files.best.is_file() or files.last.is_file()):
        run = open_explained(files.root)  # in the layout it trained in: about 2x faster for depthwise convs
        trained = run.trained
        test = run_data(files, trained).splits["test"]
        scope = ""
        if len(test) > REDRAW_SAMPLE:
            test = test.subset(np.linspace(0, len(test) - 1, REDRAW_SAMPLE).round().astype(int))
            scope = f" (among {REDRAW_SAMPLE} test images)"
        accumulator, _ = score_split(trained.model, trained.normalize, test, len(trained.class_names))
        draw_explain_figures(
            trained.model,
            trained.normalize,
            test,
            accumulator.predictions(),
            accumulator.hardest(),
            trained.class_names,
            files,
            scope,
        )
    return write_report(files.root)


def evaluate_run(run_path: str | Path, data: str | None = None, tta: bool = False) -> tuple[Path, dict[str, Any]]:
    """``cnnlab evaluate``: re-scores a run on its own test split, or on another data set.

    Results for another data set go to ``<run>/eval/<data-name>/`` so the run's own stay intact.
    ``tta``: also with test-time augmentation, beside the plain scores (``cnnlab.models.tta``).

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
        test = load_for_classes(data, trained.class_names, trained.channels, trained.stored_side, config.data.workers)
        out = files.evaluation(data)
    metrics = evaluate_split(
        trained.model,
        trained.normalize,
        test,
        trained.class_names,
        out,
        extra={"data": data or trained.meta["data"]["source"]},
        explain=data is None,
        autocast=run_autocast(config.train),
        tta=tta,
    )
    if data is None:
        write_report(files.root)
    return out.root, metrics
