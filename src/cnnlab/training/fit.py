"""``fit``: from a config to a trained model in a run folder (evaluation is the next package's)."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.augment.mix import mix_batch
from cnnlab.augment.meaning import meaning_warnings
from cnnlab.config import RunConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import InputNeeds, prepare_data
from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.models import model_input, resolve_name
from cnnlab.models.freeze import freeze_backbone
from cnnlab.models.inference import accuracy
from cnnlab.models.summary import count_parameters, model_summary
from cnnlab.io import atomic_write_text
from cnnlab.training.build import build_model, preprocess_meta
from cnnlab.training.architecture import resize_to_run
from cnnlab.training.checkpoint import load_model_weights, load_module_weights, read_checkpoint
from cnnlab.training.feature_cache import FeatureHeadModule
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups
from cnnlab.training.budget import MIN_STAGE_SECONDS, split_line, stage_budget
from cnnlab.training.history import trim_history
from cnnlab.training.resume import check_same_data, resume_point
from cnnlab.training.run_dir import (
    RunFiles, new_run_dir, open_run, read_meta, read_run_config, write_config, write_meta, write_skipped,
)
from cnnlab.version import __version__
from cnnlab.training.staged import TrainingHooks, checkpoint_seconds, fit_stage
from cnnlab.training.stages import improvement_line, plan_stages

log = logging.getLogger("cnnlab")


@dataclass
class RunContext:
    """A run being trained: its config, folder, data, network and metadata."""

    config: RunConfig
    files: RunFiles
    data: PreparedData
    model: torch.nn.Module
    meta: dict[str, Any]
    hooks: TrainingHooks = field(default_factory=TrainingHooks)


@dataclass
class FitResult:
    """What training leaves for evaluation: the run folder, the best model and the data."""

    files: RunFiles
    module: ClassifierModule
    data: PreparedData
    meta: dict[str, Any]
    config: RunConfig


class TrainingInterrupted(Exception):
    """Ctrl-C during training: last.ckpt holds the last finished epoch, ready for --resume."""

    def __init__(self, result: FitResult) -> None:
        super().__init__(f"interrupted: {result.files.root}")
        self.result = result


def _class_weights(data: PreparedData) -> torch.Tensor:
    counts = torch.tensor(data.splits["train"].class_counts(data.num_classes), dtype=torch.float32)
    return counts.sum() / (counts.clamp(min=1) * len(counts))  # inverse frequency, mean ~1


def _prepare(config: RunConfig) -> tuple[PreparedData, dict[str, Any], torch.nn.Module, str]:
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    wanted = model_input(config.model.name, config.model.pretrained)
    data = prepare_data(config.data, config.train.seed, InputNeeds(wanted.channels, wanted.image_size))
    preprocess = preprocess_meta(data, config)
    model = build_model(config, data.num_classes, preprocess)
    pretrained = config.model.pretrained or bool(config.model.weights)
    if plan_stages(config, pretrained, warn=False)[0].head_only:
        freeze_backbone(model)  # the summary's Trainable column then shows stage 1 as it will run
    try:
        summary = model_summary(model, (data.channels, *data.image_size))  # fails fast on bad sizes
    except RuntimeError as exc:
        raise CnnlabError(
            f"model '{config.model.name}' cannot take {data.image_size[0]}x{data.image_size[1]} px "
            f"images ({str(exc).splitlines()[0][:80]}); use a larger --image-size"
        ) from None
    return data, preprocess, model, summary


def start_run(config: RunConfig, command: str) -> RunContext:
    """Prepares data and model (failing fast on bad input), then creates the run folder."""
    data, preprocess, model, summary = _prepare(config)
    for warning in meaning_warnings(config.augment, data.channels, data.class_names):
        log.warning(warning)
    return open_new_run(config, command, data, preprocess, model, summary)


def open_new_run(config: RunConfig, command: str, data: PreparedData, preprocess: dict[str, Any],
                 model: torch.nn.Module, summary: str) -> RunContext:
    """Creates the run folder of a prepared model and data: config, summary, skipped files, run.json."""
    files = new_run_dir(config)
    write_config(files, config)
    write_skipped(files, data.skipped)
    if data.skipped:
        log.warning("%d files skipped (unreadable or not images): see %s", len(data.skipped), files.skipped)
    atomic_write_text(files.summary, summary + "\n")
    print(summary)
    total, trainable = count_parameters(model)
    meta: dict[str, Any] = {
        "name": files.root.name,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "cnnlab_version": __version__,
        "command": command,
        "status": "running",
        "class_names": data.class_names,
        "preprocess": preprocess,
        "data": data.summary(),
        "model": {"name": config.model.name, "resolved": resolve_name(config.model.name),
                  "params_total": total, "params_trainable": trainable},
        "stages": [],
        "timing": {},
    }
    write_meta(files, meta)
    return RunContext(config, files, data, model, meta)


def reopen_run(path: str) -> tuple[RunContext, str | None]:
    """A stopped run, rebuilt from its folder, and the checkpoint to continue from (if any).

    Raises:
        CnnlabError: when the run is complete, or its data changed since it started.
    """
    files = open_run(path)
    meta = read_meta(files)
    if meta.get("status") == "completed":
        raise CnnlabError(f"run '{files.root}' is already complete; start a new run instead of --resume")
    if meta.get("distillation"):
        raise CnnlabError(f"run '{files.root}' was distilled from a teacher; --resume would go on without it: "
                          "run cnnlab distill again")
    config = read_run_config(files)
    data, _, model, _ = _prepare(config)
    resize_to_run(model, files)  # a pruned run: its own layer widths, from its pruned weights
    check_same_data(meta, data)
    return RunContext(config, files, data, model, meta), resume_point(files)


def _module_kwargs(ctx: RunContext) -> dict[str, Any]:
    aug, data = ctx.config.augment, ctx.data
    mix = None
    if aug.mixup > 0 or aug.cutmix > 0:
        mix = partial(mix_batch, num_classes=data.num_classes, mixup_alpha=aug.mixup,
                      cutmix_alpha=aug.cutmix, label_smoothing=aug.label_smoothing)
    preprocess = ctx.meta["preprocess"]
    return {
        "model": ctx.model,
        "num_classes": data.num_classes,
        "normalize": Normalize(preprocess["mean"], preprocess["std"]),
        "train_cfg": ctx.config.train,
        "augment": build_batch_augment(aug),
        "mix": mix,
        "label_smoothing": aug.label_smoothing,
        "class_weights": _class_weights(data) if ctx.config.train.class_weights == "auto" else None,
        "metadata": {k: ctx.meta[k] for k in ("class_names", "preprocess", "model")},
    }


def _fit_guarded(run: Any, files: RunFiles, batch_size: int) -> Any:
    """Runs ``run()`` turning out-of-memory and a full disk into clear, actionable errors."""
    try:
        return run()
    except (torch.OutOfMemoryError, MemoryError):
        raise CnnlabError(
            f"out of memory at batch size {batch_size}; try --batch-size {max(1, batch_size // 2)} "
            "(or a smaller --image-size)"
        ) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise CnnlabError(
            f"disk full while writing to {files.root}; the previous checkpoint is kept. Free some "
            f"space, then: cnnlab train --resume {files.root}"
        ) from None


def _attempt(ctx: RunContext, where: str) -> dict[str, Any]:
    """Records this attempt in run.json: when it started, and (for a resume) where it picked up."""
    attempt: dict[str, Any] = {"started": dt.datetime.now().isoformat(timespec="seconds")}
    if ctx.meta.get("attempts"):
        attempt["resumed_at"] = where
    ctx.meta.setdefault("attempts", []).append(attempt)
    return attempt


def _resume_point_text(records: list[dict[str, Any]], resumable: str | None, epoch: int | None,
                       todo: list[Any]) -> str:
    """Where a resumed run picks up, in words: 'after epoch 2 of stage finetune', ..."""
    if resumable is not None:
        return f"after epoch {int(epoch or 0) + 1} of stage {resumable}"
    if not todo:
        return "at the final evaluation"
    if records:
        return f"at the start of stage {todo[0].name}"
    return "at the start (no checkpoint yet)"


def train_run(ctx: RunContext, resume_from: str | None = None) -> FitResult:
    """Trains (or continues) the run's stages with the Lightning Trainer; keeps the best weights.

    A from-scratch run has one stage; a pretrained one trains its head on a frozen base, then
    fine-tunes the top at a low learning rate (``cnnlab.training.stages``). A resumed run keeps the
    history of its finished stages, redoes only what its checkpoint does not hold, and keeps
    counting each stage's time (and the time budget) where it stopped.

    Raises:
        TrainingInterrupted: on Ctrl-C, after the last finished epoch is safe in last.ckpt.
        CnnlabError: out of memory (with a smaller batch size to try) or a full disk.
    """
    config, files = ctx.config, ctx.files
    apply_speedups(ctx.model, config.train)  # channels_last / torch.compile when asked for
    pretrained = config.model.pretrained or bool(config.model.weights)
    plan = plan_stages(config, pretrained)
    records = [r for r in ctx.meta.get("stages", []) if r.get("done")]
    finished = [r["name"] for r in records]
    checkpoint = read_checkpoint(resume_from) if resume_from else {}
    checkpoint_stage = (checkpoint.get("cnnlab") or {}).get("stage")
    resumable = checkpoint_stage if checkpoint_stage not in finished else None
    trim_history(files.metrics_csv, finished, resumable, checkpoint.get("epoch") if resumable else None)
    if records and files.best.is_file() and resumable is None:
        load_model_weights(ctx.model, files.best)  # the next stage starts from the best so far
    todo = [stage for stage in plan if stage.name not in finished]
    attempt = _attempt(ctx, _resume_point_text(records, resumable, checkpoint.get("epoch"), todo))
    write_meta(files, ctx.meta)  # the attempt is on record even if this process is killed
    budget_total = config.train.time_budget
    if budget_total and not records and resumable is None:
        print(split_line(budget_total, [stage.name for stage in plan]))
    module_kwargs = _module_kwargs(ctx)
    module = None
    for index, stage in enumerate(todo):
        ckpt = resume_from if stage.name == resumable else None
        budget = None
        if budget_total:
            used = sum(r["seconds"] for r in records)
            budget = stage_budget(budget_total, len(todo) - index, used, checkpoint_seconds(ckpt))
            if budget.left < MIN_STAGE_SECONDS and records:
                ctx.meta.setdefault("notes", []).append(
                    f"the time budget ({budget_total:g} s) was used up before stage '{stage.name}': it was skipped")
                log.warning(ctx.meta["notes"][-1])
                break
        best_so_far = records[-1].get("best_val_loss") if records else None
        outcome = _fit_guarded(
            lambda: fit_stage(ctx, stage, module_kwargs, ckpt, best_so_far, budget, plan.index(stage)),
            files, config.data.batch_size,
        )
        module = outcome.module
        best = outcome.record.pop("best_checkpoint")
        if best and Path(best).is_file():
            load_module_weights(module, best)  # EarlyStopping's "restore best weights"
        test = ctx.data.splits["test"]
        outcome.record["test_acc"] = accuracy(ctx.model, test.images, test.labels, module_kwargs["normalize"])
        if outcome.interrupted:
            attempt["ended"] = "interrupted"
            ctx.meta["status"] = "interrupted"
            ctx.meta["stages"] = records + [outcome.record]
            write_meta(files, ctx.meta)
            raise TrainingInterrupted(FitResult(files, _eval_module(module, module_kwargs), ctx.data, ctx.meta, config))
        outcome.record["done"] = True
        records.append(outcome.record)
        ctx.meta["stages"] = records
        write_meta(files, ctx.meta)
        if outcome.budget_spent and index + 1 < len(todo):
            ctx.meta.setdefault("notes", []).append(
                f"the time budget ({budget_total:g} s) could not be met: feature extraction alone outran it, "
                "so only stage 1 was trained")
            break
    if len(records) > 1:
        ctx.meta["improvement"] = improvement_line(records[0]["test_acc"], records[-1]["test_acc"])
        log.info(ctx.meta["improvement"])
    ctx.meta["timing"] = {"train_seconds": round(sum(r["seconds"] for r in records), 2)}
    if budget_total:
        ctx.meta["timing"]["budget_seconds"] = budget_total
    attempt["ended"] = "trained"
    ctx.meta["status"] = "trained"
    write_meta(files, ctx.meta)
    if module is None:  # every stage was already done: rebuild a module around the best weights
        load_model_weights(ctx.model, files.best)
        module = ClassifierModule(**module_kwargs)
    return FitResult(files, _eval_module(module, module_kwargs), ctx.data, ctx.meta, config)


def _eval_module(module: ClassifierModule, module_kwargs: dict[str, Any]) -> ClassifierModule:
    """Evaluation sees images, so a feature-cache module is swapped for an image one."""
    if isinstance(module, FeatureHeadModule):
        return ClassifierModule(**module_kwargs)
    return module


def fit(config: RunConfig, command: str) -> FitResult:
    """Trains a model as ``config`` says and leaves a run folder with its best checkpoint."""
    return train_run(start_run(config, command))


def resume(path: str) -> FitResult:
    """Continues a stopped run from its last checkpoint (or from scratch if it has none)."""
    ctx, checkpoint = reopen_run(path)
    if checkpoint is None:
        log.warning("no checkpoint in %s yet: training from the first epoch", ctx.files.root)
    ctx.meta["status"] = "running"
    write_meta(ctx.files, ctx.meta)
    return train_run(ctx, checkpoint)
