"""One Lightning ``fit`` per transfer stage: frozen head training, then fine-tuning the top.

Each stage has its own optimiser (only trainable parameters, at the stage's LR), early stopping
and LR schedule; a frozen stage trains on cached backbone features when it can. A stage's clock
runs from its start (feature extraction included) and is saved in every checkpoint, so a
resumed stage goes on counting where it stopped: run.json and ``--time-budget`` see all the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig, TrainConfig
from cnnlab.data.loaders import ImageDataModule
from cnnlab.errors import CnnlabError
from cnnlab.models.heads import head_forward, splits_into_features_and_head
from cnnlab.models.summary import trainable_table
from cnnlab.training.activation_cache import ActivationCache, top_accuracy
from cnnlab.training.callbacks import SyncedStop
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.console import interruption_text, stage_start, verbose
from cnnlab.training.feature_cache import FeatureDataModule, FeatureHeadModule, FeatureSet, cache_features
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.lr_finder import find_lr
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import compile_fallback
from cnnlab.training.run_dir import write_config
from cnnlab.training.selection import ValidationRecord, monitor, score_to_beat, stage_criterion
from cnnlab.training.stage_plan import FrozenBatchNormEval, Stage, apply_stage, stage_param_groups, use_feature_cache
from cnnlab.training.time_budget import StageBudget, TimeBudget
from cnnlab.training.tracking import stage_logger
from cnnlab.training.trainer import build_trainer, quiet_lightning

log = logging.getLogger("cnnlab")
AUGMENTED_VIEWS = 5  # augmented copies of the training set cached for a frozen stage
CLOCK_KEY = "cnnlab_stage_seconds"  # in a checkpoint: the seconds its stage had used when it was saved
CLOCK = time.perf_counter  # what stage times and budgets are measured with (tests put a fake one here)
AUTO = "auto"  # --lr auto: the stage's rate comes from the learning-rate finder
PLACEHOLDER_LR = 1e-3  # a module's rate until the finder's pick replaces it (the finder sets its own rates)


@dataclasses.dataclass
class StageOutcome:
    """What one stage leaves: the module holding the best weights, and its record for run.json."""

    module: ClassifierModule
    record: dict[str, Any]
    interrupted: bool
    budget_spent: bool = False  # extraction alone outran the time budget: later stages are skipped
    # The test accuracy of the model as it is now, from cached features or activations (None: score images).
    test_accuracy: Callable[[], float] | None = None
    features: dict[str, FeatureSet] | None = None  # a frozen stage's cached features (a refit reuses them)


class PreparationInterrupted(KeyboardInterrupt):
    """Ctrl-C while a stage prepares its inputs (features, activations), before its first epoch.

    ``what`` names the work; ``saved`` (filled in by ``fit_stage``) says what the run keeps.
    """

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what, self.saved = what, ""


@contextlib.contextmanager
def _preparing(what: str) -> Iterator[None]:
    """Turns a Ctrl-C inside into :class:`PreparationInterrupted` naming ``what`` was running."""
    try:
        yield
    except PreparationInterrupted:
        raise
    except KeyboardInterrupt:
        raise PreparationInterrupted(what) from None


class StageClock(L.Callback):
    """The seconds a stage has used: this attempt's, plus those of earlier attempts (``already``)."""

    def __init__(self, already: float = 0.0, clock: Any = None) -> None:
        self.clock = clock or CLOCK
        self.already, self.start = already, self.clock()

    def seconds(self) -> float:
        return self.already + self.clock() - self.start

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[CLOCK_KEY] = self.seconds()


def checkpoint_seconds(path: str | None) -> float:
    """The seconds a checkpoint's stage had used when it was saved (0 without a checkpoint)."""
    return float(read_checkpoint(path).get(CLOCK_KEY, 0.0)) if path else 0.0


def _feature_device(config: RunConfig) -> str:
    """Where to run the one feature-extraction pass: the training accelerator when there is one."""
    wanted = config.train.accelerator
    if torch.cuda.is_available() and wanted in ("auto", "cuda", "gpu"):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and wanted in ("auto", "mps"):
        return "mps"
    return "cpu"


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
    """What one stage trains: its module and data, and how (cached features, cut activations or images)."""

    stage: Stage
    train_cfg: TrainConfig
    module: ClassifierModule
    datamodule: L.LightningDataModule
    cached: bool  # the head on cached backbone features
    on_cut: bool  # the top on the frozen layers' cached output
    trainable: int
    frozen: int
    test_accuracy: Callable[[], float] | None = None
    features: dict[str, FeatureSet] | None = None


def stage_features(
    config: RunConfig, model: torch.nn.Module, data: Any, normalize: Any, ranks: Any, listener: Any = None
) -> dict[str, FeatureSet]:
    """A frozen stage's cached features: every split once, the training images in augmented views.

    Drawn from torch's random stream as it stands (a stage seeds it first), so the same seed gives the same views.
    """
    augment = build_batch_augment(config.augment, crop=normalize.crop)
    return cache_features(
        model,
        data,
        normalize,
        augment=augment,
        train_views=AUGMENTED_VIEWS if augment is not None else 1,
        device=ranks.device if ranks.several else _feature_device(config),
        listener=listener,
        ranks=ranks,
    )


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
    config, model, data, ranks = ctx.config, ctx.model, ctx.data, ctx.ranks
    batch_size = batch_size or config.data.batch_size
    L.seed_everything(config.train.seed + position, workers=True, verbose=False)
    rate = PLACEHOLDER_LR if stage.lr == AUTO else stage.lr
    train_cfg = stage_train_config(config, dataclasses.replace(stage, lr=rate), budget)
    trainable, frozen = apply_stage(model, stage, config.transfer)
    groups = stage_param_groups(model, dataclasses.replace(stage, lr=rate), config.train.weight_decay)
    kwargs = {**module_kwargs, "train_cfg": train_cfg, "param_groups": groups}
    kwargs["metadata"] = {**module_kwargs["metadata"], "stage": stage.name}
    hooks: TrainingHooks = ctx.hooks
    cached = use_feature_cache(stage, config) and splits_into_features_and_head(model) and not hooks.custom
    cut_here = (
        activation_cache if activation_cache is not None and activation_cache.stage == stage else None
    )  # trains on its activations
    on_cut = cut_here is not None
    how = " (backbone features computed once, then cached)" if cached else ""
    if cut_here is not None:
        how = f" (on the frozen layers' output below {cut_here.cut.where}, computed once: each epoch runs only the top)"
    lr_text = "lr auto (the learning-rate finder runs first)" if stage.lr == AUTO else f"lr {stage.lr:g}"
    if ranks.is_zero:
        print(
            stage_start(stage, position + 1, trainable, frozen, how, lr_text, budget.seconds if budget else None),
            flush=True,
        )
        if verbose():  # the Keras-style table of what trains; the start line has its totals
            print(trainable_table(model), flush=True)
    balanced = config.data.sampler == "balanced"
    test_accuracy = None
    if cached:
        catching = (
            activation_cache.catching(data) if activation_cache is not None and not on_cut else contextlib.nullcontext()
        )
        with catching, _preparing("feature extraction"):
            features = features or stage_features(config, model, data, kwargs["normalize"], ranks, watch)
        # The budget bounds the extraction, not the head: its epochs on cached features cost
        # milliseconds, and a slow extraction (a busy machine) must not leave it one epoch.
        head_kwargs = {**kwargs, "train_cfg": dataclasses.replace(train_cfg, time_budget=None)}
        module: ClassifierModule = FeatureHeadModule(
            model=model,
            num_classes=data.num_classes,
            **{k: v for k, v in head_kwargs.items() if k not in ("model", "num_classes")},
        )
        datamodule: L.LightningDataModule = FeatureDataModule(features, batch_size, config.train.seed, balanced)
        test = features["test"]
        test_accuracy = lambda: top_accuracy(lambda f: head_forward(model, f), model, test.features, test.labels)  # noqa: E731
    elif cut_here is not None:
        with _preparing("the caching of the frozen layers' output"):
            module, datamodule = cut_here.training(kwargs, data, batch_size, config.train.seed, balanced)
        test_accuracy = lambda: cut_here.test_accuracy(data.splits["test"].labels)  # noqa: E731
    else:
        module = hooks.module_factory(**kwargs)
        datamodule = ImageDataModule(data, batch_size, config.train.seed, balanced, hooks.train_extra)
    return StageInputs(
        stage,
        train_cfg,
        module,
        datamodule,
        cached,
        on_cut,
        trainable,
        frozen,
        test_accuracy,
        features if cached else None,
    )


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
    print(finding.line(), flush=True)
    ctx.config = dataclasses.replace(config, train=dataclasses.replace(config.train, lr=finding.lr))
    ctx.meta["lr_find"] = finding.record()
    if ctx.ranks.is_zero:
        write_config(ctx.files, ctx.config)
        finding.save(ctx.files.lr_find_curve, ctx.files.figure("lr_find"))
        ctx.save_meta()
    # The test drew from the random stream: start the stage's draws again, as a run given --lr PICK would.
    L.seed_everything(config.train.seed + position, workers=True, verbose=False)
    return use_rate(inputs, finding.lr, config.train.weight_decay, ctx.model)


def fit_until_ctrl_c(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, resume_from: str | None
) -> bool:
    """``trainer.fit`` (from ``resume_from`` if given); True when Ctrl-C stopped it (last.ckpt holds the last epoch)."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown, then exit(1)
        if not trainer.interrupted:
            raise
        return True
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C from then on; a notebook must not
    return False


def fit_stage(
    ctx: Any,
    stage: Stage,
    module_kwargs: dict[str, Any],
    resume_from: str | None,
    previous: dict[str, Any] | None,
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
    config, data, ranks = ctx.config, ctx.data, ctx.ranks
    stage_clock = StageClock(checkpoint_seconds(resume_from))
    watch = _ExtractionWatch(stage_clock, budget) if budget is not None else None
    try:
        inputs = prepare_stage(ctx, stage, module_kwargs, budget, position, device_batch, activation_cache, watch)
    except PreparationInterrupted as stop:
        finished = [r["name"] for r in ctx.meta.get("stages", []) if r.get("done")]
        stop.saved = interruption_text(stop.what, stage, position + 1, finished, resume_from is not None)
        raise
    if stage.lr == AUTO:
        inputs = _run_finder(ctx, inputs, position)
    stage, train_cfg, module, datamodule = inputs.stage, inputs.train_cfg, inputs.module, inputs.datamodule
    cached, on_cut, test_accuracy = inputs.cached, inputs.on_cut, inputs.test_accuracy
    trainable, frozen = inputs.trainable, inputs.frozen
    hooks: TrainingHooks = ctx.hooks
    criterion = hooks.select or stage_criterion(stage.name, config)
    to_beat = score_to_beat(previous, criterion)
    validation = ValidationRecord(criterion, len(data.splits["val"]))
    callbacks: list[L.Callback] = [FrozenBatchNormEval(stage.bn_eval), stage_clock, validation, *hooks.callbacks]
    if ranks.several:
        callbacks.append(SyncedStop(ranks))
    if budget is not None and not cached:
        callbacks.append(
            TimeBudget(
                max(budget.seconds, 1e-3), clock=stage_clock.clock, start=stage_clock.start, already=stage_clock.already
            )
        )
    with quiet_lightning(), compile_fallback(config.train.compile):
        tracker = stage_logger(ctx.meta, stage.name) if ranks.is_zero else None  # rank 0 alone logs
        trainer, checkpoint = build_trainer(
            train_cfg,
            ctx.files,
            stage.epochs,
            stage.name,
            extra_callbacks=callbacks,
            monitor=monitor(criterion),
            extra_loggers=[tracker] if tracker else None,
        )
        if to_beat is not None and resume_from is None and ranks.from_zero(ctx.files.best.is_file):
            carry_best(checkpoint, str(ctx.files.best), to_beat)
        interrupted = fit_until_ctrl_c(trainer, module, datamodule, resume_from)
    best_score = checkpoint.best_model_score
    own = validation.best  # the stage's own best epoch on its criterion
    replaced = own is not None and (
        to_beat is None or (best_score is not None and float(best_score) < float(torch.tensor(to_beat)))
    )
    kept_loss = own["loss"] if replaced and own else (previous or {}).get("best_val_loss")
    record = {
        "name": stage.name,
        "epochs": trainer.current_epoch,
        "seconds": round(stage_clock.seconds(), 2),
        "lr": stage.lr,
        "params_trainable": trainable,
        "params_frozen": frozen,
        "feature_cache": cached,
        "activation_cache": activation_cache.cut.where if on_cut and activation_cache is not None else None,
        "best_val_loss": kept_loss,  # of the model best.ckpt holds after this stage
        "select": criterion,  # what the stage's best epoch was chosen by (cnnlab.training.selection)
        "val_at_best": own,  # the validation figures of the stage's own best epoch
        "stage_best_val_loss": own["loss"] if own and torch.isfinite(torch.tensor(own["loss"])) else None,
        "replaced_best": replaced,  # best.ckpt now holds this stage's weights (else the previous stage's)
        "best_checkpoint": checkpoint.best_model_path or None,
    }
    if budget is not None:
        record["budget_seconds"] = round(budget.seconds, 2)
    budget_spent = ranks.broadcast(bool(watch and watch.too_long))  # rank 0's clock decides for all
    return StageOutcome(
        module, record, interrupted, budget_spent=budget_spent, test_accuracy=test_accuracy, features=inputs.features
    )
