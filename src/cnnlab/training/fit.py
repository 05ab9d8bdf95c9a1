"""``fit``: from a config to a trained model in a run folder (evaluation is the next package's).

With several processes (``--devices``, ``--num-nodes``; see ``cnnlab.training.distributed``) every
rank runs this same code: the Trainer's fits are where they work together; around them rank 0
writes the run folder and decides, and the others receive its decisions, so all stay in step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.augment.mix import mix_batch
from cnnlab.config import RunConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.preprocess import Preprocess
from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.models.inference import accuracy
from cnnlab.phases import phase
from cnnlab.threads import watch
from cnnlab.training.activation_cache import plan_cut
from cnnlab.training.checkpoint import load_model_weights, load_module_weights, read_checkpoint
from cnnlab.training.console import header, stage_end, verbose
from cnnlab.training.distributed import in_processes
from cnnlab.training.feature_cache import FeatureHeadModule
from cnnlab.training.history import trim_history
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups, apply_threads
from cnnlab.training.ranks import Ranks, batch_plan, scale_line
from cnnlab.training.refit import Refit, chosen_stages, refit_data, refit_wanted
from cnnlab.training.run_dir import RunFiles
from cnnlab.training.stage_fit import StageOutcome, checkpoint_seconds, fit_stage
from cnnlab.training.stage_plan import kept_weights, plan_stages
from cnnlab.training.start import RunContext, reopen_run, resume_config, start_run
from cnnlab.training.time_budget import MIN_STAGE_SECONDS, split_line, stage_budget
from cnnlab.training.tracking import finish_tracking, resume_tracking
from cnnlab.training.trainer import run_autocast

log = logging.getLogger("cnnlab")


@dataclass
class FitResult:
    """What training leaves for evaluation: the run folder, the best model and the data."""

    files: RunFiles
    module: ClassifierModule
    data: PreparedData
    meta: dict[str, Any]
    config: RunConfig


class TrainingInterrupted(Exception):
    """Ctrl-C during training: last.ckpt holds the last finished epoch, ready for --resume.

    ``result`` (the model and data, to report what was done) stays in the process that trained:
    sent to another process (a spawned rank 0's waiting parent) only ``files`` travels.
    """

    def __init__(
        self, result: FitResult | None, files: RunFiles | None = None, saved: str = "the last finished epoch is saved"
    ) -> None:
        if files is None:
            assert result is not None, "an interruption carries its result or its files"
            files = result.files
        self.files: RunFiles = files
        super().__init__(f"interrupted: {self.files.root}")
        self.result, self.saved = result, saved

    def __reduce__(self) -> tuple[Any, ...]:
        return TrainingInterrupted, (None, self.files, self.saved)


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
            finish_tracking(ctx.files, ctx.meta, None, "FAILED")
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
    ctx.meta["status"] = "interrupted"
    if ctx.meta.get("attempts"):
        ctx.meta["attempts"][-1]["ended"] = "interrupted"
    ctx.save_meta()
    if ctx.ranks.is_zero:
        finish_tracking(ctx.files, ctx.meta, None, "KILLED")


def _class_weights(data: PreparedData) -> torch.Tensor:
    counts = torch.tensor(data.splits["train"].class_counts(data.num_classes), dtype=torch.float32)
    return counts.sum() / (counts.clamp(min=1) * len(counts))  # inverse frequency, mean ~1


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
    preprocess = ctx.meta["preprocess"]
    return {
        "model": ctx.model,
        "num_classes": data.num_classes,
        "normalize": Normalize.of(Preprocess.from_json(preprocess)),
        "train_cfg": ctx.config.train,
        "augment": build_batch_augment(aug, crop=data.crop),
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
    ctx.attempt = attempt  # its time goes on record with each save
    return attempt


def _resume_point_text(records: list[dict[str, Any]], resumable: str | None, epoch: int | None, todo: list[Any]) -> str:
    """Where a resumed run picks up, in words: 'after epoch 2 of stage finetune', ..."""
    if resumable is not None:
        return f"after epoch {int(epoch or 0) + 1} of stage {resumable}"
    if not todo:
        return "at the final evaluation"
    if records:
        return f"at the start of stage {todo[0].name}"
    return "at the start (no checkpoint yet)"


def _stage_result(ctx: RunContext, outcome: StageOutcome, normalize: Normalize, score_test: bool) -> dict[str, Any]:
    """The stage's record as rank 0 has it, the best weights loaded on every rank.

    Rank 0 loads the best checkpoint (EarlyStopping's "restore best weights"), scores the test
    split (``score_test``: a stage another one follows; the run's last weights are scored by the
    final evaluation, which fills in ``test_acc``), and sends its record and weights to the
    others: the next stage starts from the same weights everywhere, and reads no file written by
    another machine.
    """
    best = outcome.record.pop("best_checkpoint")

    def on_zero() -> dict[str, Any]:
        if best and Path(best).is_file():
            load_module_weights(outcome.module, best)
        test = ctx.data.splits["test"]
        scored = outcome.test_accuracy  # from cached features or activations: no pass over the images
        if not score_test:
            outcome.record["test_acc"] = None
        elif scored:
            outcome.record["test_acc"] = scored()
        else:
            outcome.record["test_acc"] = accuracy(
                ctx.model, test.for_pass, test.labels, normalize, run_autocast(ctx.config.train)
            )
        return outcome.record

    record = ctx.ranks.from_zero(on_zero)
    ctx.ranks.share_weights(ctx.model)
    return record


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
    config, files, ranks = ctx.config, ctx.files, ctx.ranks
    apply_speedups(ctx.model, config.train)  # channels_last / torch.compile when asked for
    pretrained = config.model.pretrained or bool(config.model.weights)
    plan = plan_stages(config, pretrained)
    hooked = ctx.hooks.custom or bool(ctx.hooks.callbacks)
    no_refit = refit_wanted(config, ctx.data, pretrained, ranks.several, hooked)  # "": a refit follows
    # The refit starts again from the weights the stages started from (taken before any stage's are loaded).
    initial = None if no_refit else {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
    records = [r for r in ctx.meta.get("stages", []) if r.get("done")]
    finished = [r["name"] for r in records]
    checkpoint = read_checkpoint(resume_from) if resume_from else {}
    checkpoint_stage = (checkpoint.get("cnnlab") or {}).get("stage")
    resumable = checkpoint_stage if checkpoint_stage not in finished else None
    if ranks.is_zero:
        trim_history(files.metrics_csv, finished, resumable, checkpoint.get("epoch") if resumable else None)
    if records and resumable is None:  # the next stage starts from the best so far

        def load_best() -> None:
            if files.best.is_file():
                load_model_weights(ctx.model, files.best)

        ranks.from_zero(load_best)
        ranks.share_weights(ctx.model)
    todo = [stage for stage in plan if stage.name not in finished]
    attempt = _attempt(ctx, _resume_point_text(records, resumable, checkpoint.get("epoch"), todo))
    batches = batch_plan(config.data.batch_size, ranks.world_size, config.train.batch_per_device)
    attempt["threads"] = apply_threads(config.train, max(1, ranks.world_size // ranks.num_nodes))
    budget_total = config.train.time_budget
    if ranks.is_zero:
        _print_header(ctx, plan, attempt, split_line(budget_total, [s.name for s in plan]) if budget_total else None)
    if ranks.several:
        attempt.update(
            processes=ranks.world_size,
            nodes=ranks.num_nodes,
            global_batch=batches.global_batch,
            device_batch=batches.per_device,
        )
        print(scale_line(batches, config.train, ranks), flush=True)
    ctx.save_meta()  # the attempt is on record even if this process is killed
    module_kwargs = _module_kwargs(ctx)
    activation_cache = None
    why = "a custom training module" if ctx.hooks.custom else "several processes" if ranks.several else ""
    if not why:
        activation_cache, why = plan_cut(ctx.model, todo, config, ctx.data, module_kwargs["normalize"])
    if why and any(stage.name == "finetune" for stage in todo):
        log.info("fine-tuning trains on images: %s", why)
    module, features = None, None
    for index, stage in enumerate(todo):
        ckpt = resume_from if stage.name == resumable else None
        budget = None
        if budget_total:
            used = sum(r["seconds"] for r in records)
            budget = stage_budget(budget_total, len(todo) - index, used, checkpoint_seconds(ckpt))
            if budget.left < MIN_STAGE_SECONDS and records:
                ctx.meta.setdefault("notes", []).append(
                    f"the time budget ({budget_total:g} s) was used up before stage '{stage.name}': it was skipped"
                )
                log.warning(ctx.meta["notes"][-1])
                break
        previous = records[-1] if records else None  # its best.ckpt is the one to beat
        with phase("training"):
            outcome = _fit_guarded(
                partial(
                    fit_stage,
                    ctx,
                    stage,
                    module_kwargs,
                    ckpt,
                    previous,
                    budget,
                    plan.index(stage),
                    batches.per_device,
                    activation_cache,
                ),
                files,
                config.data.batch_size,
            )
        module, features = outcome.module, outcome.features or features
        # What the final evaluation scores anyway (after a refit, the refit's model: every stage is scored here).
        last = (stage is plan[-1] and bool(no_refit)) or outcome.interrupted
        with phase("evaluation"):  # each earlier stage's test accuracy, for the stage table
            record = _stage_result(ctx, outcome, module_kwargs["normalize"], score_test=not last)
        _note_thread_changes(attempt)
        if ranks.is_zero:
            print(stage_end(record, plan.index(stage) + 1, stage.epochs, outcome.interrupted), flush=True)
        if outcome.interrupted:
            ctx.meta["stages"] = [*records, record]
            _stop_interrupted(
                ctx, attempt, module, module_kwargs, _interrupted_text(record, plan.index(stage) + 1, stage.epochs)
            )
        record["done"] = True
        records.append(record)
        ctx.meta["stages"] = records
        ctx.save_meta()
        if outcome.budget_spent and index + 1 < len(todo):
            ctx.meta.setdefault("notes", []).append(
                f"the time budget ({budget_total:g} s) could not be met: feature extraction alone outran it, "
                "so only stage 1 was trained"
            )
            break
    if len(records) > 1:
        ctx.meta["kept"] = kept_weights(records)
        log.info("%s", ctx.meta["kept"]["why"])
    if no_refit:
        ctx.meta["refit"] = {"done": False, "why": no_refit}
    elif initial is not None and records and not ctx.meta.get("refit", {}).get("done"):
        refit = Refit(chosen_stages(plan, records, config), initial, ctx.data, features, activation_cache)
        module = _refit(ctx, refit, attempt, (resume_from, resumable), batches.per_device) or module
    refit_seconds = ctx.meta.get("refit", {}).get("seconds", 0.0)
    ctx.meta["timing"] = {"train_seconds": round(sum(r["seconds"] for r in records) + refit_seconds, 2)}
    ctx.meta["memory"] = {"peak_rss_mb": ranks.peak_rss_mb()}  # per process: what each needed to train
    if budget_total:
        ctx.meta["timing"]["budget_seconds"] = budget_total
    attempt["ended"] = "trained"
    ctx.meta["status"] = "trained"
    ctx.save_meta()
    if module is None:  # every stage was already done: rebuild a module around the best weights
        ranks.from_zero(lambda: load_model_weights(ctx.model, files.best))  # only rank 0 evaluates
        module = ClassifierModule(**module_kwargs)
    return FitResult(files, _eval_module(module, module_kwargs), ctx.data, ctx.meta, config)


def _print_header(ctx: RunContext, plan: list[Any], attempt: dict[str, Any], budget_line: str | None) -> None:
    """The run's opening block (data, model, plan); the full layer table too with ``--verbose``."""
    if verbose() and ctx.files.summary.is_file():
        print(ctx.files.summary.read_text(encoding="utf-8"), flush=True)
    print(
        header(
            ctx.config,
            ctx.data,
            ctx.meta,
            plan,
            run=str(ctx.files.root),
            threads=attempt["threads"],
            budget_line=budget_line,
            resumed_at=attempt.get("resumed_at"),
        ),
        flush=True,
    )


def _interrupted_text(record: dict[str, Any], position: int, planned_epochs: int) -> str:
    """What a Ctrl-C inside a stage's epochs kept: said by the command, beside how to resume."""
    return (
        f"stage {position} '{record['name']}' after {record.get('epochs', 0)} of {planned_epochs} epochs; "
        "the last finished epoch is saved (last.ckpt) and the best weights so far are kept (best.ckpt)"
    )


def _stop_interrupted(
    ctx: RunContext, attempt: dict[str, Any], module: ClassifierModule, module_kwargs: dict[str, Any], saved: str
) -> None:
    """Puts Ctrl-C on record (run.json) and raises TrainingInterrupted with the model to report on."""
    attempt["ended"] = "interrupted"
    ctx.meta["status"] = "interrupted"
    ctx.save_meta()
    raise TrainingInterrupted(
        FitResult(ctx.files, _eval_module(module, module_kwargs), ctx.data, ctx.meta, ctx.config), saved=saved
    )


def _refit(
    ctx: RunContext, refit: Refit, attempt: dict[str, Any], resume: tuple[str | None, str | None], device_batch: int
) -> ClassifierModule | None:
    """Trains the refit on train + val (``cnnlab.training.refit``); returns its module (None: nothing left
    to train). Ctrl-C in it reports the validated model (best.ckpt until the refit ends)."""
    refit_ctx = dataclasses.replace(ctx, data=refit_data(ctx.data))
    refit_kwargs = _module_kwargs(refit_ctx)  # class weights and the like from train + val
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


def _note_thread_changes(attempt: dict[str, Any]) -> None:
    """Puts the thread watch's changes (another process started or ended) on the attempt's record."""
    watching = watch()
    if watching is not None and watching.changes:
        attempt["thread_changes"] = list(watching.changes)


def _eval_module(module: ClassifierModule, module_kwargs: dict[str, Any]) -> ClassifierModule:
    """Evaluation sees images, so a feature-cache module is swapped for an image one."""
    if isinstance(module, FeatureHeadModule):
        return ClassifierModule(**module_kwargs)
    return module


def _fit(ranks: Ranks, config: RunConfig, command: str) -> FitResult:
    return _interruptible(start_run(config, command, ranks))


def fit(config: RunConfig, command: str) -> FitResult:
    """Trains a model as ``config`` says and leaves a run folder with its best checkpoint.

    Several devices or nodes: runs in each of the processes (started here if need be); returns
    rank 0's result.
    """
    return in_processes(config.train, _fit, config, command)


def _resume(ranks: Ranks, path: str) -> FitResult:
    ctx, checkpoint = reopen_run(path, ranks)
    if checkpoint is None:
        log.warning("no checkpoint in %s yet: training from the first epoch", ctx.files.root)
    ctx.meta["status"] = "running"
    ctx.save_meta()
    if ctx.ranks.is_zero:
        resume_tracking(ctx.meta)  # the same MLflow run goes on
    return _interruptible(ctx, checkpoint)


def resume(path: str) -> FitResult:
    """Continues a stopped run from its last checkpoint (or from scratch if it has none), in as
    many processes as it was started with."""
    return in_processes(resume_config(path)[2].train, _resume, path)
