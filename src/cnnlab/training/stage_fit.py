"""One Lightning ``fit`` per stage: frozen head training, then fine-tuning the top.

Fitting a stage reads top to bottom in :func:`fit_stage`: prepare what it trains (:func:`prepare_stage`:
seed, set what trains, choose its data source, ``cnnlab.training.stage_data``), find its learning rate
if asked (``--lr auto``), gather its callbacks (:func:`stage_callbacks`), fit, and write its record.

Each stage has its own optimiser (only trainable parameters, at the stage's LR), early stopping
and LR schedule; a frozen stage trains on cached backbone features when it can. A stage's clock
runs from its start (feature extraction included) and is saved in every checkpoint, so a
resumed stage goes on counting where it stopped: run.json and ``--time-budget`` see all the work.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cnnlab.augment.batch import alternating_flip
from cnnlab.config import RunConfig, TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.models.summary import trainable_table
from cnnlab.training.activation_cache import ActivationCache
from cnnlab.training.callbacks import SyncedStop
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.console import interruption_text, say, stage_start, verbose
from cnnlab.training.feature_cache import FeatureSet
from cnnlab.training.interrupts import PreparationInterrupted, fit_until_ctrl_c
from cnnlab.training.lr_finder import find_lr
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import compile_fallback
from cnnlab.training.ranks import Ranks
from cnnlab.training.record import LrFindRecord, StageRecord, ValScores
from cnnlab.training.rng import seed_streams
from cnnlab.training.run_dir import write_config
from cnnlab.training.selection import ValidationRecord, monitor, score_to_beat, stage_criterion
from cnnlab.training.stage_data import Batches, StageData, choose_stage_data
from cnnlab.training.stage_plan import FrozenBatchNormEval, Stage, apply_stage, stage_param_groups
from cnnlab.training.time_budget import StageBudget, TimeBudget
from cnnlab.training.tracking import stage_logger
from cnnlab.training.trainer import build_trainer, quiet_lightning

log = logging.getLogger("cnnlab")
CLOCK_KEY = "cnnlab_stage_seconds"  # in a checkpoint: the seconds its stage had used when it was saved
CLOCK = time.perf_counter  # what stage times and budgets are measured with (tests put a fake one here)
AUTO = "auto"  # --lr auto: the stage's rate comes from the learning-rate finder
PLACEHOLDER_LR = 1e-3  # a module's rate until the finder's pick replaces it (the finder sets its own rates)


@dataclasses.dataclass
class StageOutcome:
    """What one stage leaves: the module holding the best weights, and its record for run.json."""

    module: ClassifierModule
    record: StageRecord
    interrupted: bool
    best_checkpoint: str | None = None  # where the stage's best epoch was saved (None: no epoch finished)
    budget_spent: bool = False  # extraction alone outran the time budget: later stages are skipped
    # The test accuracy of the model as it is now, from cached features or activations (None: score images).
    test_accuracy: Callable[[], float] | None = None
    features: dict[str, FeatureSet] | None = None  # a frozen stage's cached features (a refit reuses them)


class StageClock(L.Callback):
    """The seconds a stage has used: this attempt's, plus those of earlier attempts (``already``)."""

    def __init__(self, already: float = 0.0, clock: Any = None) -> None:
        self.clock = clock or CLOCK
        self.already, self.start = already, self.clock()

    def seconds(self) -> float:
        return self.already + self.clock() - self.start

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint[CLOCK_KEY] = self.seconds()


def checkpoint_seconds(path: str | None) -> float:
    """The seconds a checkpoint's stage had used when it was saved (0 without a checkpoint)."""
    return float(read_checkpoint(path).get(CLOCK_KEY, 0.0)) if path else 0.0


def stage_train_config(config: RunConfig, stage: Stage, budget: StageBudget | None) -> TrainConfig:
    """The run's training options with the stage's length, learning rate and share of the budget."""
    seconds = max(budget.seconds, 1e-3) if budget is not None else None
    return dataclasses.replace(
        config.train,
        epochs=stage.epochs,
        lr=stage.lr,
        time_budget=seconds,
        scheduler=stage.scheduler or config.train.scheduler,
    )


class _ExtractionWatch:
    """Says at once when extracting features will take longer than the stage's budget allows."""

    def __init__(self, clock: StageClock, budget: StageBudget) -> None:
        self.clock, self.budget, self.too_long = clock, budget, False
        self.started = clock.seconds()

    def __call__(self, done: int, total: int, _seconds: float) -> None:
        spent = self.clock.seconds() - self.started
        if self.too_long or done >= total or spent < 0.5:  # a first estimate needs half a second
            return
        expected = self.clock.seconds() + spent * (total - done) / done
        if expected > self.budget.seconds:
            self.too_long = True
            log.warning(
                "the time budget cannot be met: extracting the backbone's features alone takes about "
                "%.0f s of the %.0f s this stage may use; the head still trains its epochs on them "
                "(milliseconds each), and fine-tuning is skipped",
                expected,
                self.budget.seconds,
            )


def carry_best(checkpoint: ModelCheckpoint, path: str, score: float) -> None:
    """Makes the previous stage's best.ckpt the one to beat: replaced only by a score below ``score``.

    Lightning's top-1 bookkeeping is ``best_k_models``: with it empty, the stage's first epoch
    would overwrite best.ckpt whatever its score (a fine-tuning stage that made validation worse
    then replaced the stage-1 model).
    """
    value = torch.tensor(score)
    checkpoint.best_k_models = {path: value}
    checkpoint.kth_best_model_path, checkpoint.kth_value = path, value
    checkpoint.best_model_path, checkpoint.best_model_score = path, value


@dataclasses.dataclass
class StageInputs:
    """What one stage trains: its module and data, from its source (cached features, cut activations or images)."""

    stage: Stage
    train_cfg: TrainConfig
    module: ClassifierModule
    datamodule: L.LightningDataModule
    source: StageData
    trainable: int
    frozen: int

    @property
    def cached(self) -> bool:
        """The head trains on cached backbone features."""
        return self.source.feature_cache

    @property
    def on_cut(self) -> bool:
        """The top trains on the frozen layers' cached output."""
        return self.source.cut_where is not None

    @property
    def test_accuracy(self) -> Callable[[], float] | None:
        return self.source.test_accuracy()

    @property
    def features(self) -> dict[str, FeatureSet] | None:
        return self.source.features


def _announce(
    model: torch.nn.Module, stage: Stage, position: int, counts: tuple[int, int], how: str, budget: Any
) -> None:
    """The stage's start line (what trains, on what, how long); with ``--verbose`` its trainable table too."""
    lr_text = "lr auto (the learning-rate finder runs first)" if stage.lr == AUTO else f"lr {stage.lr:g}"
    say(stage_start(stage, position + 1, *counts, how, lr_text, budget.seconds if budget else None))
    if verbose():  # the Keras-style table of what trains; the start line has its totals
        say(trainable_table(model))


def prepare_stage(
    ctx: Any,
    stage: Stage,
    module_kwargs: dict[str, Any],
    budget: StageBudget | None = None,
    position: int = 0,
    batch_size: int | None = None,
    activation_cache: ActivationCache | None = None,
    watch: Any = None,
    features: dict[str, FeatureSet] | None = None,
) -> StageInputs:
    """Seeds the stage's random stream, sets what trains, and builds its module and data.

    A frozen stage extracts the backbone's features here (once), unless given its ``features``
    (a refit's, from the stages' own); ``stage.lr`` ``auto`` is built at a placeholder rate that
    :func:`use_rate` replaces (the finder sets every group's rate itself).
    """
    config = ctx.config
    seed_streams(config.train.seed, position)
    at_rate = dataclasses.replace(stage, lr=PLACEHOLDER_LR if stage.lr == AUTO else stage.lr)
    train_cfg = stage_train_config(config, at_rate, budget)
    counts = apply_stage(ctx.model, stage, config.transfer)
    groups = stage_param_groups(ctx.model, at_rate, config.train.weight_decay)
    kwargs = {**module_kwargs, "train_cfg": train_cfg, "param_groups": groups}
    kwargs["metadata"] = {**module_kwargs["metadata"], "stage": stage.name}
    source = choose_stage_data(ctx, stage, activation_cache, watch, features)
    if ctx.ranks.is_zero:
        _announce(ctx.model, stage, position, counts, source.how(), budget)
    batches = Batches(
        batch_size or config.data.batch_size,
        config.train.seed,
        config.data.sampler == "balanced",
        alternating_flip(config.augment, config.train.seed),
    )
    module, datamodule = source.build(kwargs, batches)
    return StageInputs(stage, train_cfg, module, datamodule, source, *counts)


def use_rate(inputs: StageInputs, lr: float, weight_decay: float, model: Any) -> StageInputs:
    """The stage's module and options at learning rate ``lr`` (after the finder picked it)."""
    stage = dataclasses.replace(inputs.stage, lr=lr)
    inputs.module.train_cfg = dataclasses.replace(inputs.module.train_cfg, lr=lr)
    inputs.module.param_groups = stage_param_groups(model, stage, weight_decay)
    return dataclasses.replace(inputs, stage=stage, train_cfg=dataclasses.replace(inputs.train_cfg, lr=lr))


def _run_finder(ctx: Any, inputs: StageInputs, position: int) -> StageInputs:
    """``--lr auto``: the range test on the stage's own module and data; the run then trains at its pick,
    recorded in config.yaml (so a resume trains at it too), run.json and the report."""
    config = ctx.config
    if ctx.ranks.several:
        raise CnnlabError(
            "--lr auto runs the learning-rate finder in one process; find the rate first "
            "(cnnlab lr-find DATA with the same options) and give it to --lr"
        )
    finding = find_lr(inputs.module, inputs.datamodule, inputs.train_cfg, inputs.stage.name, ctx.files.root)
    say(finding.line())
    ctx.config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=finding.lr))
    ctx.record.lr_find = LrFindRecord.from_json(finding.record())
    if ctx.ranks.is_zero:
        write_config(ctx.files, ctx.config)
        finding.save(ctx.files.lr_find_curve, ctx.files.figure("lr_find"))
        ctx.save_meta()
    # The test drew from the random stream: start the stage's draws again, as a run given --lr PICK would.
    seed_streams(config.train.seed, position)
    return use_rate(inputs, finding.lr, config.train.weight_decay, ctx.model)


def stage_callbacks(
    stage: Stage, clock: StageClock, ranks: Ranks, own: list[L.Callback], budget: StageBudget | None = None
) -> list[L.Callback]:
    """A stage's callbacks beside the Trainer's own (``cnnlab.training.trainer``), in the order they run:
    frozen BatchNorm kept in eval mode, the stage's clock, the stage's ``own`` (validation record, a
    command's, a refit's stop), the processes' common stop, and the time budget's stop."""
    callbacks: list[L.Callback] = [FrozenBatchNormEval(stage.bn_eval), clock, *own]
    if ranks.several:
        callbacks.append(SyncedStop(ranks))
    if budget is not None:
        callbacks.append(
            TimeBudget(max(budget.seconds, 1e-3), clock=clock.clock, start=clock.start, already=clock.already)
        )
    return callbacks


def _kept_text(ctx: Any, stop: PreparationInterrupted, stage: Stage, position: int, resume_from: str | None) -> str:
    """What the run keeps after a Ctrl-C while the stage computed its cache (said beside how to resume)."""
    finished = [r.name for r in ctx.record.done_stages()]
    return interruption_text(stop.what, stage, position + 1, finished, resume_from is not None)


def _train(
    ctx: Any, inputs: StageInputs, callbacks: list[L.Callback], criterion: str, to_beat: Any, resume_from: str | None
) -> tuple[L.Trainer, ModelCheckpoint, bool]:
    """Builds the stage's Trainer and fits it; returns it, its checkpoint callback and whether Ctrl-C stopped it."""
    stage = inputs.stage
    with quiet_lightning(), compile_fallback(ctx.config.train.compile):
        tracker = stage_logger(ctx.record, stage.name) if ctx.ranks.is_zero else None  # rank 0 alone logs
        trainer, checkpoint = build_trainer(
            inputs.train_cfg,
            ctx.files,
            stage.epochs,
            stage.name,
            extra_callbacks=callbacks,
            monitor=monitor(criterion),
            extra_loggers=[tracker] if tracker else None,
        )
        if to_beat is not None and resume_from is None and ctx.ranks.from_zero(ctx.files.best.is_file):
            carry_best(checkpoint, str(ctx.files.best), to_beat)
        interrupted = fit_until_ctrl_c(trainer, inputs.module, inputs.datamodule, resume_from)
    return trainer, checkpoint, interrupted


def _stage_record(
    inputs: StageInputs,
    trainer: L.Trainer,
    checkpoint: ModelCheckpoint,
    seconds: float,
    validation: ValidationRecord,
    previous: StageRecord | None,
    to_beat: Any,
    budget: StageBudget | None,
) -> StageRecord:
    """The stage's record for run.json."""
    best_score = checkpoint.best_model_score
    own = validation.best  # the stage's own best epoch on its criterion
    replaced = own is not None and (
        to_beat is None or (best_score is not None and float(best_score) < float(torch.tensor(to_beat)))
    )
    return StageRecord(
        name=inputs.stage.name,
        epochs=trainer.current_epoch,
        seconds=round(seconds, 2),
        lr=inputs.stage.lr,
        params_trainable=inputs.trainable,
        params_frozen=inputs.frozen,
        feature_cache=inputs.cached,
        activation_cache=inputs.source.cut_where,
        best_val_loss=own["loss"]
        if replaced and own
        else (previous.best_val_loss if previous else None),  # best.ckpt's
        select=validation.criterion,  # what the stage's best epoch was chosen by (cnnlab.training.selection)
        val_at_best=ValScores.from_json(own) if own else None,  # the stage's own best epoch on validation
        stage_best_val_loss=own["loss"] if own and torch.isfinite(torch.tensor(own["loss"])) else None,
        replaced_best=replaced,  # best.ckpt now holds this stage's weights (else the previous stage's)
        budget_seconds=round(budget.seconds, 2) if budget is not None else None,
    )


def fit_stage(
    ctx: Any,
    stage: Stage,
    module_kwargs: dict[str, Any],
    resume_from: str | None,
    previous: StageRecord | None,
    budget: StageBudget | None,
    position: int = 0,
    device_batch: int | None = None,
    activation_cache: ActivationCache | None = None,
) -> StageOutcome:
    """Trains one stage; returns the module with the stage's best weights loaded.

    Args:
        resume_from: the checkpoint of this stage to continue from, or None to start it.
        previous: the previous stage's record: its best.ckpt is replaced only by a better epoch on
            this stage's criterion (``cnnlab.training.selection``).
        budget: the stage's share of ``--time-budget`` (None: no budget).
        position: the stage's place in the plan: its random stream starts from seed + position,
            whatever ran before it, so a run resumed at this stage draws what an uninterrupted one
            does (a checkpoint's saved RNG state then takes over).
        device_batch: the batch of each process (default ``--batch-size``: one process).
        activation_cache: the fine-tuning stage's cut (``cnnlab.training.activation_cache``): a frozen stage
            catches its activations while extracting features, the fine-tuning stage trains its top on them.
    """
    clock = StageClock(checkpoint_seconds(resume_from))
    watch = _ExtractionWatch(clock, budget) if budget is not None else None
    try:
        inputs = prepare_stage(ctx, stage, module_kwargs, budget, position, device_batch, activation_cache, watch)
    except PreparationInterrupted as stop:
        stop.saved = _kept_text(ctx, stop, stage, position, resume_from)
        raise
    if stage.lr == AUTO:
        inputs = _run_finder(ctx, inputs, position)
    criterion = ctx.hooks.select or stage_criterion(inputs.stage.name, ctx.config)
    to_beat = score_to_beat(previous, criterion)
    validation = ValidationRecord(criterion, len(ctx.data.splits["val"]))
    own = [validation, *ctx.hooks.callbacks]
    callbacks = stage_callbacks(inputs.stage, clock, ctx.ranks, own, None if inputs.cached else budget)
    trainer, checkpoint, interrupted = _train(ctx, inputs, callbacks, criterion, to_beat, resume_from)
    record = _stage_record(inputs, trainer, checkpoint, clock.seconds(), validation, previous, to_beat, budget)
    budget_spent = ctx.ranks.broadcast(bool(watch and watch.too_long))  # rank 0's clock decides for all
    return StageOutcome(
        inputs.module,
        record,
        interrupted,
        checkpoint.best_model_path or None,
        budget_spent,
        test_accuracy=inputs.test_accuracy,
        features=inputs.features,
    )
