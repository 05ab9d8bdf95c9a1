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
from cnnlab.aside import Aside
from cnnlab.config import RunConfig
from cnnlab.data.prepare import load_for_classes, prepare_data
from cnnlab.data.types import PreparedData
from cnnlab.evaluation.evaluator import draw_explain_figures, evaluate_split, score_split, write_training_figures
from cnnlab.evaluation.report import write_report
from cnnlab.machine import peak_rss_bytes
from cnnlab.phases import phase
from cnnlab.training.checkpoint import TrainedModel, load_trained
from cnnlab.training.distributed import in_processes
from cnnlab.training.ranks import Ranks
from cnnlab.training.record import MemoryRecord, RunRecord
from cnnlab.training.run_dir import FIGURES, ResultFiles, RunFiles, open_run, read_run_config, write_record
from cnnlab.training.run_fit import FitResult, TrainingInterrupted, fit, resume
from cnnlab.training.stage_plan import record_final_accuracy
from cnnlab.training.start import resume_config, spent_on
from cnnlab.training.tracking import finish_tracking
from cnnlab.training.trainer import run_autocast

log = logging.getLogger("cnnlab")

REDRAW_SAMPLE = 200  # test images scored to pick the report's Grad-CAM images when they are redrawn


def finish_run(result: FitResult) -> dict[str, Any]:
    """Evaluates a freshly trained model on its test split and writes figures and report."""
    started = time.perf_counter()
    files, data, record = result.files, result.data, result.record
    with phase("figures"):  # drawn on another core while this one scores the test split
        training_figures = Aside(
            partial(
                write_training_figures, files, data.splits["train"], data.class_names, record, result.config.augment
            ),
            "training figures",
        )
    metrics = evaluate_split(
        result.module.model,
        result.module.normalize,
        data.splits["test"],
        data.class_names,
        files,
        extra={"best_val_loss": record.stages[-1].best_val_loss},
        explain=True,
        autocast=run_autocast(result.config.train),
    )
    record_final_accuracy(record, metrics["accuracy"])  # on record before the report reads it
    with phase("figures"):
        training_figures.join()
    record.timing.evaluate_seconds = round(time.perf_counter() - started, 2)
    record.status = "completed"
    record.memory = _with_evaluation_peak(record.memory)
    bring_time_up_to_now(record)
    write_record(files, record)
    with phase("report"):
        write_report(files.root)
    if record.tracking:
        with phase("tracking"):  # MLflow gets the report as written
            finish_tracking(files, record, metrics, "FINISHED", _figures(files))
    bring_time_up_to_now(record)
    write_record(files, record)
    return metrics


def bring_time_up_to_now(run: RunRecord) -> None:
    """Where the time went, up to now: this attempt's phases on its record, and ``timing`` summing every
    attempt's (a resumed run's work, as train_seconds counts it)."""
    if run.attempts:
        spent_on(run.attempts[-1])
        attempts = [attempt.to_json() for attempt in run.attempts]
    else:  # a run from before attempts were recorded: this command alone
        attempts = [phases.attempt_record()]
    across = phases.across_attempts(attempts)
    if across:
        run.timing.phases, run.timing.total_seconds = across["phases"], across["total_seconds"]


def _figures(files: RunFiles) -> list[Path]:
    return [files.figure(key) for key in FIGURES]


def _with_evaluation_peak(memory: MemoryRecord | None) -> MemoryRecord:
    """The run's per-process peaks, rank 0's raised to what evaluating took (it alone evaluates)."""
    peaks = list(memory.peak_rss_mb if memory is not None else []) or [0]
    peaks[0] = max(peaks[0], round((peak_rss_bytes() or 0) / 2**20))
    return replace(memory, peak_rss_mb=peaks) if memory is not None else MemoryRecord(peak_rss_mb=peaks)


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
    files, data, record = result.files, result.data, result.record
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
        record_final_accuracy(record, metrics["accuracy"])
    write_training_figures(files, data.splits["train"], data.class_names, record, result.config.augment)
    bring_time_up_to_now(record)
    write_record(files, record)
    write_report(files.root)
    finish_tracking(files, record, metrics, "KILLED", _figures(files))


def run_data(files: RunFiles, trained: TrainedModel) -> PreparedData:
    """A run's own data, split as at training and decoded as its model wants it.

    Warns when the test split is no longer the images the run was scored on.
    """
    config = read_run_config(files)
    pre = trained.preprocess
    prepared = prepare_data(
        replace(
            config.data, image_size=pre.side, channels=pre.channels, crop_pct=pre.crop_pct, crop_mode=pre.crop_mode
        ),
        config.train.seed,
        pre.request(),
    )
    test = trained.record.data.splits.get("test")
    expected = test.fingerprint if test is not None else None
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
        pre = trained.preprocess
        test = load_for_classes(data, trained.class_names, pre.channels, pre.stored_side, config.data.workers, pre.fit)
        out = files.evaluation(data)
    metrics = evaluate_split(
        trained.model,
        trained.normalize,
        test,
        trained.class_names,
        out,
        extra={"data": data or trained.record.data.source},
        explain=data is None,
        autocast=run_autocast(config.train),
        tta=tta,
    )
    if data is None:
        write_report(files.root)
    return out.root, metrics
