"""Starting a run, or reopening a stopped one: data and model ready, the run folder created or read.

With several processes, rank 0 goes first (decoding the data fills the decoded-image cache the
others then read), creates the run folder and writes its first files; the others receive the
folder and its metadata from it, so every rank works on the same run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

import cnnlab.phases as phases
from cnnlab.augment.meaning import meaning_warnings
from cnnlab.config import RunConfig
from cnnlab.data.prepare import prepare_data
from cnnlab.data.preprocess import Preprocess
from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_text
from cnnlab.models import model_input, resolve_name
from cnnlab.models.freeze import freeze_backbone
from cnnlab.models.summary import count_parameters, model_summary
from cnnlab.phases import phase
from cnnlab.training.architecture import resize_to_run
from cnnlab.training.build import build_model, preprocess_of
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.ranks import SINGLE, Ranks, StoppedElsewhere
from cnnlab.training.record import AttemptRecord, DataRecord, ModelRecord, RunRecord
from cnnlab.training.resume import check_same_data, resume_point
from cnnlab.training.rng import seed_streams
from cnnlab.training.run_dir import (
    RunFiles,
    new_run_dir,
    open_run,
    read_record,
    read_run_config,
    renamed_note,
    write_config,
    write_record,
    write_skipped,
)
from cnnlab.training.stage_plan import plan_stages
from cnnlab.training.tracking import start_tracking
from cnnlab.version import __version__

log = logging.getLogger("cnnlab")


def spent_on(attempt: AttemptRecord) -> None:
    """This command's time so far (``cnnlab.phases``: its phases and total) on the attempt's record."""
    spent = phases.attempt_record()
    if spent:  # {} when no command began a record: nothing true to say
        attempt.phases, attempt.total_seconds = spent["phases"], spent["total_seconds"]


@dataclass
class RunContext:
    """A run being trained: its config, folder, data, network and metadata, and its processes."""

    config: RunConfig
    files: RunFiles
    data: PreparedData
    model: torch.nn.Module
    record: RunRecord  # run.json
    ranks: Ranks = field(default_factory=lambda: SINGLE)
    hooks: TrainingHooks = field(default_factory=TrainingHooks)
    attempt: AttemptRecord | None = None  # this process's entry in record.attempts, once it has one

    def save_meta(self) -> None:
        """Writes run.json (rank 0 only: the other ranks keep the same record in memory), this attempt's
        time so far on its record: a killed attempt keeps what it had spent when last saved."""
        if self.attempt is not None:
            spent_on(self.attempt)
        if self.ranks.is_zero:
            write_record(self.files, self.record)


def _prepare_here(config: RunConfig, cache_read_only: bool) -> tuple[PreparedData, Preprocess, torch.nn.Module, str]:
    seed_streams(config.train.seed)  # the model's initial weights and the split's draws
    needs = model_input(config.model.name, config.model.pretrained)
    with phase("data"):
        data = prepare_data(config.data, config.train.seed, needs, cache_read_only=cache_read_only)
    with phase("model"):
        preprocess = preprocess_of(data, config)
        model = build_model(config, data.num_classes, preprocess)
        pretrained = config.model.pretrained or bool(config.model.weights)
        if plan_stages(config, pretrained, warn=False)[0].head_only:
            freeze_backbone(model)  # the summary's Trainable column then shows stage 1 as it will run
        try:
            summary = model_summary(model, (data.channels, *data.input_size))  # fails fast on bad sizes
        except RuntimeError as exc:
            raise CnnlabError(
                f"model '{config.model.name}' cannot take {data.input_size[0]}x{data.input_size[1]} px "
                f"images ({str(exc).splitlines()[0][:80]}); use a larger --image-size"
            ) from None
    return data, preprocess, model, summary


def prepare_inputs(config: RunConfig) -> tuple[PreparedData, Preprocess, torch.nn.Module, str]:
    """Data, preprocessing, network and its summary as a run of ``config`` gets them (one process, no run folder)."""
    return _prepare_here(config, cache_read_only=False)


def _prepare(config: RunConfig, ranks: Ranks) -> tuple[PreparedData, Preprocess, torch.nn.Module, str]:
    """Data, preprocessing, network and its summary; rank 0 first (it alone writes the image cache)."""
    prepared = ranks.zero_first(lambda: _prepare_here(config, cache_read_only=not ranks.is_zero))
    _same_data_everywhere(prepared[0], ranks)
    return prepared


def _same_data_everywhere(data: PreparedData, ranks: Ranks) -> None:
    """Stops every rank when one found other data than rank 0 (other files at the path, on another
    machine): their batches would differ in number and the processes would wait for each other forever."""
    if not ranks.several:
        return
    mine = {name: image_set.fingerprint() for name, image_set in data.splits.items()}
    differs = mine != ranks.broadcast(mine)
    if not ranks.any(differs):
        return
    if differs:
        raise CnnlabError(
            f"the data at '{data.source}' differs from rank 0's (other files or classes); every "
            "machine needs the same data at the same path"
        )
    if ranks.is_zero:
        raise CnnlabError(
            f"another process of the run found other data at '{data.source}' (see its message); "
            "every machine needs the same data at the same path"
        )
    raise StoppedElsewhere("the data differs between the processes")


def _create_run(
    config: RunConfig, command: str, data: PreparedData, preprocess: Preprocess, model: torch.nn.Module, summary: str
) -> tuple[str, RunRecord]:
    for warning in meaning_warnings(config.augment, data.channels, data.class_names):
        log.warning(warning)
    files = new_run_dir(config)
    try:
        with phase("tracking") if config.tracking != "off" else contextlib.nullcontext():
            tracking = start_tracking(config, files.root.name, command)
    except CnnlabError:
        shutil.rmtree(files.root, ignore_errors=True)  # claimed a moment ago and still empty: no run started
        raise
    write_config(files, config)
    write_skipped(files, data.skipped)
    if data.skipped:
        log.warning("%d files skipped (unreadable or not images): see %s", len(data.skipped), files.skipped)
    atomic_write_text(files.summary, summary + "\n")  # the run header names it; --verbose prints it
    total, trainable = count_parameters(model)
    record = RunRecord(
        name=files.root.name,
        created=dt.datetime.now().isoformat(timespec="seconds"),
        cnnlab_version=__version__,
        command=command,
        status="running",
        class_names=data.class_names,
        preprocess=preprocess,
        data=DataRecord.from_json(data.summary()),
        model=ModelRecord(
            name=config.model.name,
            resolved=resolve_name(config.model.name),
            params_total=total,
            params_trainable=trainable,
        ),
        tracking=tracking or None,
    )
    renamed = renamed_note(config, files)
    if renamed:
        log.warning(renamed)
        record.notes = [renamed]
    write_record(files, record)
    return str(files.root), record


def start_run(config: RunConfig, command: str, ranks: Ranks = SINGLE) -> RunContext:
    """Prepares data and model (failing fast on bad input), then creates the run folder (rank 0)."""
    data, preprocess, model, summary = _prepare(config, ranks)
    return open_new_run(config, command, data, preprocess, model, summary, ranks)


def open_new_run(
    config: RunConfig,
    command: str,
    data: PreparedData,
    preprocess: Preprocess,
    model: torch.nn.Module,
    summary: str,
    ranks: Ranks = SINGLE,
) -> RunContext:
    """Creates the run folder of a prepared model and data (rank 0): config, summary, skipped files, run.json."""
    root, record = ranks.from_zero(lambda: _create_run(config, command, data, preprocess, model, summary))
    return RunContext(config, RunFiles(Path(root)), data, model, record, ranks)


def resume_config(path: str) -> tuple[RunFiles, RunRecord, RunConfig]:
    """A stopped run's folder, run.json and options, checked to be resumable.

    Raises:
        CnnlabError: when it is not a run, or is complete already.
    """
    files = open_run(path)
    record = read_record(files)
    if record.status == "completed":
        raise CnnlabError(f"run '{files.root}' is already complete; start a new run instead of --resume")
    if record.distillation:
        raise CnnlabError(
            f"run '{files.root}' was distilled from a teacher; --resume would go on without it: "
            "run cnnlab distill again"
        )
    return files, record, read_run_config(files)


def reopen_run(path: str, ranks: Ranks = SINGLE) -> tuple[RunContext, str | None]:
    """A stopped run, rebuilt from its folder, and the checkpoint to continue from (if any).

    Rank 0 reads the folder, so every rank continues from the same record (the folder must be
    reachable from every machine all the same: each rank loads the checkpoint, as Lightning does).

    Raises:
        CnnlabError: when the run is complete, or its data changed since it started.
    """
    files, record, config = ranks.from_zero(lambda: resume_config(path))
    data, _, model, _ = _prepare(config, ranks)
    resize_to_run(model, files)  # a pruned run: its own layer widths, from its pruned weights

    def checked_resume_point() -> str | None:
        check_same_data(record, data)
        return resume_point(files)

    checkpoint = ranks.from_zero(checked_resume_point)
    return RunContext(config, files, data, model, record, ranks), checkpoint
