"""``fit``: from a config to a trained model in a run folder (evaluation is the next package's).

How a run trains reads top to bottom in :func:`train_run`, one named step a line: plan the stages,
begin the attempt, plan the activation cache, fit each stage (``cnnlab.training.stage_fit``), record
the stage kept, refit (or say why not), record the end, hand the model to evaluation.

With several processes (``--devices``, ``--num-nodes``; see ``cnnlab.training.distributed``) every
rank runs this same code: the Trainer's fits are where they work together; around them rank 0
writes the run folder and decides, and the others receive its decisions, so all stay in step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.augment.mix import mix_batch
from cnnlab.config import RunConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.models.inference import accuracy
from cnnlab.phases import phase
from cnnlab.threads import watch
from cnnlab.training.activation_cache import ActivationCache, plan_cut
from cnnlab.training.checkpoint import load_model_weights, load_module_weights, read_checkpoint
from cnnlab.training.console import header, say, stage_end, verbose
from cnnlab.training.distributed import in_processes
from cnnlab.training.feature_cache import FeatureHeadModule, FeatureSet
from cnnlab.training.history import trim_history
from cnnlab.training.interrupts import TrainingInterrupted as TrainingInterrupted
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups, apply_threads
from cnnlab.training.ranks import Ranks, batch_plan, scale_line
from cnnlab.training.record import AttemptRecord, MemoryRecord, RefitRecord, RunRecord, StageRecord, TimingRecord
from cnnlab.training.refit import Refit, chosen_stages, refit_data, refit_wanted
from cnnlab.training.run_dir import RunFiles
from cnnlab.training.stage_fit import StageOutcome, checkpoint_seconds, fit_stage
from cnnlab.training.stage_plan import Stage, kept_weights, plan_stages
from cnnlab.training.start import RunContext, reopen_run, resume_config, start_run
from cnnlab.training.time_budget import MIN_STAGE_SECONDS, StageBudget, split_line, stage_budget
from cnnlab.training.tracking import finish_tracking, resume_tracking
from cnnlab.training.trainer import run_autocast

log = logging.getLogger("cnnlab")


@dataclass
class FitResult:
    """What training leaves for evaluation: the run folder, the best model and the data."""

    files: RunFiles
    module: ClassifierModule
    data: PreparedData
    record: RunRecord  # run.json as training left it
    config: RunConfig


@dataclass
class Training:
    """What :func:`train_run` knows as it goes: the plan, the stages done, this attempt, what the stages share."""

    plan: list[Stage]
    todo: list[Stage]  # the stages not finished yet, in order
    records: list[StageRecord]  # the finished stages' records (run.json's ``stages``)
    resume_from: str | None  # the checkpoint to go on from
    resumable: str | None  # the stage it holds (None: the next stage starts afresh)
    resumed_at: str  # where this attempt picks up, in words
    no_refit: str  # why the run does not refit ("" when it does)
    initial: dict[str, torch.Tensor] | None  # the weights before any stage (what a refit starts again from)
    attempt: AttemptRecord = field(default_factory=AttemptRecord)  # this attempt's entry in run.json's ``attempts``
    device_batch: int = 0
    module_kwargs: dict[str, Any] = field(default_factory=dict)  # ClassifierModule's arguments, every stage's
    activation_cache: ActivationCache | None = None  # the fine-tuning stage's cut, when it trains on one
    features: dict[str, FeatureSet] | None = None  # stage 1's cached features (a refit reuses them)
    module: ClassifierModule | None = None  # the last stage's module, holding its best weights


def fit(config: RunConfig, command: str) -> FitResult:
    """Trains a model as ``config`` says and leaves a run folder with its best checkpoint.

    Several devices or nodes: runs in each of the processes (started here if need be); returns
    rank 0's result.
    """
    return in_processes(config.train, _fit, config, command)


def _fit(ranks: Ranks, config: RunConfig, command: str) -> FitResult:
    return _interruptible(start_run(config, command, ranks))


def resume(path: str) -> FitResult:
    """Continues a stopped run from its last checkpoint (or from scratch if it has none), in as
    many processes as it was started with."""
    return in_processes(resume_config(path)[2].train, _resume, path)


def _resume(ranks: Ranks, path: str) -> FitResult:
    ctx, checkpoint = reopen_run(path, ranks)
    if checkpoint is None:
        log.warning("no checkpoint in %s yet: training from the first epoch", ctx.files.root)
    ctx.record.status = "running"
    ctx.save_meta()
    if ctx.ranks.is_zero:
        resume_tracking(ctx.record)  # the same MLflow run goes on
    return _interruptible(ctx, checkpoint)


def _interruptible(ctx: RunContext, resume_from: str | None = None) -> FitResult:
    """``train_run``, with a Ctrl-C outside an epoch (e.g. while stage-1 features are computed)
    on record too: run.json says interrupted and the command says how to resume, as for one
    inside an epoch (which Lightning stops at a step and ``train_run`` reports itself)."""
    try:
        return train_run(ctx, resume_from)
    except TrainingInterrupted:
        raise  # reported (and tracked) by the caller, which writes the report of what was done
    except CnnlabError:
        if ctx.ranks.is_zero:
            finish_tracking(ctx.files, ctx.record, None, "FAILED")
        raise
    except KeyboardInterrupt as stop:
        _on_record_as_interrupted(ctx)
        saved = getattr(stop, "saved", "") or "outside an epoch: every finished epoch and stage is saved"
        raise TrainingInterrupted(None, ctx.files, saved) from None
    except (BrokenPipeError, SystemExit) as stop:
        # `cnnlab train ... | head`: the reader of the output is gone (print raises BrokenPipeError;
        # rich ends the process with SystemExit). Stop as a Unix tool does, but on record and
        # resumable, and say so on stderr (still open) rather than leave a run that claims to be running.
        _on_record_as_interrupted(ctx)
        why = "output closed (broken pipe)" if isinstance(stop, BrokenPipeError) else "the process is exiting"
        log.warning(
            "%s: training stopped, every finished epoch is saved; go on with cnnlab train --resume %s",
            why,
            ctx.files.root,
        )
        raise


def _on_record_as_interrupted(ctx: RunContext) -> None:
    ctx.record.status = "interrupted"
    if ctx.record.attempts:
        ctx.record.attempts[-1].ended = "interrupted"
    ctx.save_meta()
    if ctx.ranks.is_zero:
        finish_tracking(ctx.files, ctx.record, None, "KILLED")


def train_run(ctx: RunContext, resume_from: str | None = None) -> FitResult:
    """Trains (or continues) the run's stages with the Lightning Trainer; keeps the best weights.

    A from-scratch run has one stage; a pretrained one trains its head on a frozen base, then
    fine-tunes the top at a low learning rate (``cnnlab.training.stage_plan``). A resumed run keeps the
    history of its finished stages, redoes only what its checkpoint does not hold, and keeps
    counting each stage's time (and the time budget) where it stopped.

    Raises:
        TrainingInterrupted: on Ctrl-C, after the last finished epoch is safe in last.ckpt.
        CnnlabError: out of memory (with a smaller batch size to try) or a full disk.
    """
    apply_speedups(ctx.model, ctx.config.train)  # channels_last / torch.compile when asked for
    run = plan_training(ctx, resume_from)
    begin_attempt(ctx, run)
    run.module_kwargs = _module_kwargs(ctx)
    run.activation_cache = plan_activation_cache(ctx, run)
    fit_stages(ctx, run)
    record_kept_stage(ctx, run)
    refit_or_say_why(ctx, run)
    record_trained(ctx, run)
    return trained_result(ctx, run)


def plan_training(ctx: RunContext, resume_from: str | None) -> Training:
    """The stages to train and where to start: after the finished ones, from ``resume_from`` for the stage
    it holds; the history trimmed to what the checkpoint holds, the best weights so far loaded."""
    config, files, ranks = ctx.config, ctx.files, ctx.ranks
    pretrained = config.model.pretrained or bool(config.model.weights)
    plan = plan_stages(config, pretrained)
    hooked = ctx.hooks.custom or bool(ctx.hooks.callbacks)
    no_refit = refit_wanted(config, ctx.data, pretrained, ranks.several, hooked)  # "": a refit follows
    # The refit starts again from the weights the stages started from (taken before any stage's are loaded).
    initial = None if no_refit else {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
    records = ctx.record.done_stages()
    finished = [r.name for r in records]
    checkpoint = read_checkpoint(resume_from) if resume_from else {}
    checkpoint_stage = (checkpoint.get("cnnlab") or {}).get("stage")
    resumable = checkpoint_stage if checkpoint_stage not in finished else None
    if ranks.is_zero:
        trim_history(files.metrics_csv, finished, resumable, checkpoint.get("epoch") if resumable else None)
    if records and resumable is None:  # the next stage starts from the best so far
        _load_best_so_far(ctx)
    todo = [stage for stage in plan if stage.name not in finished]
    resumed_at = _resume_point_text(records, resumable, checkpoint.get("epoch"), todo)
    return Training(plan, todo, records, resume_from, resumable, resumed_at, no_refit, initial)


def _load_best_so_far(ctx: RunContext) -> None:
    """best.ckpt's weights (rank 0's file) in the model on every rank."""

    def load_best() -> None:
        if ctx.files.best.is_file():
            load_model_weights(ctx.model, ctx.files.best)

    ctx.ranks.from_zero(load_best)
    ctx.ranks.share_weights(ctx.model)


def _resume_point_text(records: list[StageRecord], resumable: str | None, epoch: int | None, todo: list[Any]) -> str:
    """Where a resumed run picks up, in words: 'after epoch 2 of stage finetune', ..."""
    if resumable is not None:
        return f"after epoch {int(epoch or 0) + 1} of stage {resumable}"
    if not todo:
        return "at the final evaluation"
    if records:
        return f"at the start of stage {todo[0].name}"
    return "at the start (no checkpoint yet)"


def begin_attempt(ctx: RunContext, run: Training) -> None:
    """Puts this attempt on record (run.json, even if the process is killed), sets the threads and
    batches, and prints the run's header."""
    config, ranks = ctx.config, ctx.ranks
    attempt = run.attempt = _attempt(ctx, run.resumed_at)
    batches = batch_plan(config.data.batch_size, ranks.world_size, config.train.batch_per_device)
    run.device_batch = batches.per_device
    attempt.threads = apply_threads(config.train, max(1, ranks.world_size // ranks.num_nodes))
    budget_total = config.train.time_budget
    if ranks.is_zero:
        _print_header(
            ctx, run.plan, attempt, split_line(budget_total, [s.name for s in run.plan]) if budget_total else None
        )
    if ranks.several:
        attempt.processes, attempt.nodes = ranks.world_size, ranks.num_nodes
        attempt.global_batch, attempt.device_batch = batches.global_batch, batches.per_device
        say(scale_line(batches, config.train, ranks))
    ctx.save_meta()


def _attempt(ctx: RunContext, where: str) -> AttemptRecord:
    """Records this attempt in run.json: when it started, and (for a resume) where it picked up."""
    attempt = AttemptRecord(started=dt.datetime.now().isoformat(timespec="seconds"))
    if ctx.record.attempts:
        attempt.resumed_at = where
    ctx.record.attempts.append(attempt)
    ctx.attempt = attempt  # its time goes on record with each save
    return attempt


def _print_header(ctx: RunContext, plan: list[Any], attempt: AttemptRecord, budget_line: str | None) -> None:
    """The run's opening block (data, model, plan); the full layer table too with ``--verbose``."""
    if verbose() and ctx.files.summary.is_file():
        say(ctx.files.summary.read_text(encoding="utf-8"))
    say(
        header(
            ctx.config,
            ctx.data,
            ctx.record,
            plan,
            run=str(ctx.files.root),
            threads=attempt.threads or "",
            budget_line=budget_line,
            resumed_at=attempt.resumed_at,
        )
    )


def plan_activation_cache(ctx: RunContext, run: Training) -> ActivationCache | None:
    """The fine-tuning stage's cut (``cnnlab.training.activation_cache``), or None: it trains on images (logged why)."""
    activation_cache = None
    why = "a custom training module" if ctx.hooks.custom else "several processes" if ctx.ranks.several else ""
    if not why:
        activation_cache, why = plan_cut(ctx.model, run.todo, ctx.config, ctx.data, run.module_kwargs["normalize"])
    if why and any(stage.name == "finetune" for stage in run.todo):
        log.info("fine-tuning trains on images: %s", why)
    return activation_cache


def _module_kwargs(ctx: RunContext) -> dict[str, Any]:
    aug, data = ctx.config.augment, ctx.data
    mix = None
    if aug.mixup > 0 or aug.cutmix > 0:
        mix = partial(
            mix_batch,
            num_classes=data.num_classes,
            mixup_alpha=aug.mixup,
            cutmix_alpha=aug.cutmix,
            label_smoothing=aug.label_smoothing,
        )
    preprocess = ctx.record.preprocess
    assert preprocess is not None, "a run in training has its input format"
    return {
        "model": ctx.model,
        "num_classes": data.num_classes,
        "normalize": Normalize.of(preprocess),
        "train_cfg": ctx.config.train,
        "augment": build_batch_augment(aug, crop=data.crop, loader_flips=aug.flip_mode == "alternate"),
        "mix": mix,
        "label_smoothing": aug.label_smoothing,
        "class_weights": _class_weights(data) if ctx.config.train.class_weights == "auto" else None,
        "metadata": {  # in each checkpoint (hyperparameters), as run.json has them
            "class_names": ctx.record.class_names,
            "preprocess": preprocess.to_json(),
            "model": ctx.record.model.to_json(),
        },
    }


def _class_weights(data: PreparedData) -> torch.Tensor:
    counts = torch.tensor(data.splits["train"].class_counts(data.num_classes), dtype=torch.float32)
    return counts.sum() / (counts.clamp(min=1) * len(counts))  # inverse frequency, mean ~1


def fit_stages(ctx: RunContext, run: Training) -> None:
    """Fits each stage not yet done, each on record once it is; stops early when the time budget is spent."""
    for index, stage in enumerate(run.todo):
        budget, enough = _stage_budget(ctx, run, index, stage)
        if not enough:
            break
        outcome = _fit_one_stage(ctx, run, stage, budget)
        run.module, run.features = outcome.module, outcome.features or run.features
        _record_stage(ctx, run, stage, outcome)
        if outcome.budget_spent and index + 1 < len(run.todo):
            ctx.record.notes.append(
                f"the time budget ({ctx.config.train.time_budget:g} s) could not be met: feature extraction alone "
                "outran it, so only stage 1 was trained"
            )
            break


def _stage_budget(ctx: RunContext, run: Training, index: int, stage: Stage) -> tuple[StageBudget | None, bool]:
    """The stage's share of ``--time-budget`` (None: no budget), and False when too little is left to start
    it after an earlier stage (then skipped, with a note)."""
    total = ctx.config.train.time_budget
    if not total:
        return None, True
    used = sum(r.seconds for r in run.records)
    checkpoint = run.resume_from if stage.name == run.resumable else None
    budget = stage_budget(total, len(run.todo) - index, used, checkpoint_seconds(checkpoint))
    if budget.left < MIN_STAGE_SECONDS and run.records:
        ctx.record.notes.append(
            f"the time budget ({total:g} s) was used up before stage '{stage.name}': it was skipped"
        )
        log.warning(ctx.record.notes[-1])
        return budget, False
    return budget, True


def _fit_one_stage(ctx: RunContext, run: Training, stage: Stage, budget: StageBudget | None) -> StageOutcome:
    """``fit_stage`` (``cnnlab.training.stage_fit``) from the stage's checkpoint if it has one, out of memory and
    a full disk turned into clear errors."""
    checkpoint = run.resume_from if stage.name == run.resumable else None
    previous = run.records[-1] if run.records else None  # its best.ckpt is the one to beat
    with phase("training"):
        return cast(
            StageOutcome,
            _fit_guarded(
                partial(
                    fit_stage,
                    ctx,
                    stage,
                    run.module_kwargs,
                    checkpoint,
                    previous,
                    budget,
                    run.plan.index(stage),
                    run.device_batch,
                    run.activation_cache,
                ),
                ctx.files,
                ctx.config.data.batch_size,
            ),
        )


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


def _record_stage(ctx: RunContext, run: Training, stage: Stage, outcome: StageOutcome) -> None:
    """Scores the stage (its test accuracy, unless the final evaluation will), says how it ended and puts it
    on record; after a Ctrl-C in it, stops the run (:class:`TrainingInterrupted`)."""
    position = run.plan.index(stage) + 1
    # What the final evaluation scores anyway (after a refit, the refit's model: every stage is scored here).
    last = (stage is run.plan[-1] and bool(run.no_refit)) or outcome.interrupted
    with phase("evaluation"):  # each earlier stage's test accuracy, for the stage table
        record = _stage_result(ctx, outcome, run.module_kwargs["normalize"], score_test=not last)
    _note_thread_changes(run.attempt)
    if ctx.ranks.is_zero:
        say(stage_end(record, position, stage.epochs, outcome.interrupted))
    if outcome.interrupted:
        ctx.record.stages = [*run.records, record]
        saved = _interrupted_text(record, position, stage.epochs)
        _stop_interrupted(ctx, run.attempt, outcome.module, run.module_kwargs, saved)
    record.done = True
    run.records.append(record)
    ctx.record.stages = run.records
    ctx.save_meta()


def _stage_result(ctx: RunContext, outcome: StageOutcome, normalize: Normalize, score_test: bool) -> StageRecord:
    """The stage's record as rank 0 has it, the best weights loaded on every rank.

    Rank 0 loads the best checkpoint (EarlyStopping's "restore best weights"), scores the test
    split (``score_test``: a stage another one follows; the run's last weights are scored by the
    final evaluation, which fills in ``test_acc``), and sends its record and weights to the
    others: the next stage starts from the same weights everywhere, and reads no file written by
    another machine.
    """
    best = outcome.best_checkpoint

    def on_zero() -> StageRecord:
        if best and Path(best).is_file():
            load_module_weights(outcome.module, best)
        test = ctx.data.splits["test"]
        scored = outcome.test_accuracy  # from cached features or activations: no pass over the images
        if not score_test:
            outcome.record.test_acc = None
        elif scored:
            outcome.record.test_acc = scored()
        else:
            outcome.record.test_acc = accuracy(
                ctx.model, test.for_pass, test.labels, normalize, run_autocast(ctx.config.train)
            )
        return outcome.record

    record = ctx.ranks.from_zero(on_zero)
    ctx.ranks.share_weights(ctx.model)
    return record


def _interrupted_text(record: StageRecord, position: int, planned_epochs: int) -> str:
    """What a Ctrl-C inside a stage's epochs kept: said by the command, beside how to resume."""
    return (
        f"stage {position} '{record.name}' after {record.epochs} of {planned_epochs} epochs; "
        "the last finished epoch is saved (last.ckpt) and the best weights so far are kept (best.ckpt)"
    )


def _stop_interrupted(
    ctx: RunContext, attempt: AttemptRecord, module: ClassifierModule, module_kwargs: dict[str, Any], saved: str
) -> None:
    """Puts Ctrl-C on record (run.json) and raises TrainingInterrupted with the model to report on."""
    attempt.ended = "interrupted"
    ctx.record.status = "interrupted"
    ctx.save_meta()
    raise TrainingInterrupted(
        FitResult(ctx.files, _eval_module(module, module_kwargs), ctx.data, ctx.record, ctx.config), saved=saved
    )


def _note_thread_changes(attempt: AttemptRecord) -> None:
    """Puts the thread watch's changes (another process started or ended) on the attempt's record."""
    watching = watch()
    if watching is not None and watching.changes:
        attempt.thread_changes = list(watching.changes)


def record_kept_stage(ctx: RunContext, run: Training) -> None:
    """With several stages: which one's weights the run keeps, and why (``cnnlab.training.stage_plan``)."""
    if len(run.records) > 1:
        ctx.record.kept = kept_weights(run.records)
        log.info("%s", ctx.record.kept.why)


def refit_or_say_why(ctx: RunContext, run: Training) -> None:
    """Trains the refit on train + val (``cnnlab.training.refit``) when the run refits and has not yet,
    else puts why not on record."""
    if run.no_refit:
        ctx.record.refit = RefitRecord(done=False, why=run.no_refit)
    elif run.initial is not None and run.records and not (ctx.record.refit and ctx.record.refit.done):
        chosen = chosen_stages(run.plan, run.records, ctx.config)
        refit = Refit(chosen, run.initial, ctx.data, run.features, run.activation_cache)
        resume = (run.resume_from, run.resumable)
        run.module = _refit(ctx, refit, run.attempt, resume, run.device_batch) or run.module


def _refit(
    ctx: RunContext, refit: Refit, attempt: AttemptRecord, resume: tuple[str | None, str | None], device_batch: int
) -> ClassifierModule | None:
    """Trains the refit on train + val (``cnnlab.training.refit``); returns its module (None: nothing left
    to train). Ctrl-C in it reports the validated model (best.ckpt until the refit ends)."""
    refit_ctx = dataclasses.replace(ctx, data=refit_data(ctx.data))
    refit_kwargs = _module_kwargs(refit_ctx)  # class weights and the like from train + val
    module: ClassifierModule | None
    with phase("training"):
        module, interrupted = _fit_guarded(
            partial(refit.train, refit_ctx, refit_kwargs, *resume, device_batch), ctx.files, ctx.config.data.batch_size
        )
    _note_thread_changes(attempt)
    if interrupted and module is not None:
        ctx.ranks.from_zero(lambda: load_model_weights(ctx.model, ctx.files.best))  # the validated model
        ctx.ranks.share_weights(ctx.model)
        _stop_interrupted(
            ctx,
            attempt,
            module,
            _module_kwargs(ctx),
            "the refit on train + val: its last finished epoch is saved (last.ckpt), and best.ckpt "
            "is still the model validation chose",
        )
    return module


def record_trained(ctx: RunContext, run: Training) -> None:
    """Puts the training's end on record: its time (every attempt's), each process's peak memory, the status."""
    budget_total = ctx.config.train.time_budget
    refit_seconds = (ctx.record.refit.seconds if ctx.record.refit else None) or 0.0
    ctx.record.timing = TimingRecord(
        train_seconds=round(sum(r.seconds for r in run.records) + refit_seconds, 2), budget_seconds=budget_total or None
    )
    ctx.record.memory = MemoryRecord(peak_rss_mb=ctx.ranks.peak_rss_mb())  # per process: what each needed to train
    run.attempt.ended = "trained"
    ctx.record.status = "trained"
    ctx.save_meta()


def trained_result(ctx: RunContext, run: Training) -> FitResult:
    """What evaluation gets: the module holding the weights to score (rebuilt around best.ckpt when every
    stage was already done) and the run's data."""
    module = run.module
    if module is None:  # every stage was already done: rebuild a module around the best weights
        ctx.ranks.from_zero(lambda: load_model_weights(ctx.model, ctx.files.best))  # only rank 0 evaluates
        module = ClassifierModule(**run.module_kwargs)
    return FitResult(ctx.files, _eval_module(module, run.module_kwargs), ctx.data, ctx.record, ctx.config)


def _eval_module(module: ClassifierModule, module_kwargs: dict[str, Any]) -> ClassifierModule:
    """Evaluation sees images, so a feature-cache module is swapped for an image one."""
    if isinstance(module, FeatureHeadModule):
        return ClassifierModule(**module_kwargs)
    return module
