"""Refit: once validation has chosen the stages' epochs, train them again on train + val.

A small set cannot spare a quarter of its photos for validation, but something has to choose
how long each stage trains and whether fine-tuning is kept ("never worse than stage 1 on
validation", ``cnnlab.training.selection``). So validation chooses, as in any run; then the model
starts again from its initial weights (the pretrained backbone, the same new head) and trains the
chosen stages for the chosen epochs on train + val, on the same learning-rate schedule:

* a per-epoch schedule (plateau, the frozen stage's) replays the rates the validated epochs had
  (metrics.csv), since the refit has no validation for it to watch;
* a per-step schedule (one-cycle, cosine: fine-tuning's) keeps the validated stage's length and
  stops after the chosen epochs, so every step is at the rate the chosen epoch had.

The refit has no validation: its figures would be on images it trained on. It writes no history
(metrics.csv stays the validated stages'), its epochs go to refit.ckpt and last.ckpt, and at its end
best.ckpt (the validated model) moves to validated.ckpt and refit.ckpt becomes best.ckpt. A stage
trained on cached features costs seconds: stage 1's features of the training images are reused,
only the validation images' augmented views are extracted. Its record is ``run.json``'s ``refit``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig
from cnnlab.config.sections import REFIT_MAX_IMAGES
from cnnlab.data.splits import joined
from cnnlab.data.types import PreparedData
from cnnlab.errors import CnnlabError
from cnnlab.training.activation_cache import ActivationCache, plan_cut
from cnnlab.training.checkpoint import load_model_weights
from cnnlab.training.console import say
from cnnlab.training.feature_cache import FeatureSet, extract_features
from cnnlab.training.history import load_history
from cnnlab.training.interrupts import fit_until_ctrl_c
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import compile_fallback
from cnnlab.training.record import ChosenEpochs, RefitRecord, RefitStageRecord, RunRecord, StageRecord
from cnnlab.training.rng import seed_streams
from cnnlab.training.run_dir import RunFiles
from cnnlab.training.stage_data import stage_features
from cnnlab.training.stage_fit import AUTO, StageClock, checkpoint_seconds, prepare_stage, stage_callbacks
from cnnlab.training.stage_plan import Stage, use_feature_cache
from cnnlab.training.trainer import build_trainer, quiet_lightning

log = logging.getLogger("cnnlab")
PREFIX = "refit-"  # a refit stage's name: refit-frozen, refit-finetune (checkpoints say which stage they hold)


def refit_wanted(config: RunConfig, data: PreparedData, pretrained: bool, several: bool, hooked: bool) -> str:
    """Why this run does not refit ("" when it does), decided before any stage trains.

    Args:
        several: the run trains in several processes.
        hooked: a command changes the training (distill's module, prune's or tune's callbacks): it is
            not refit, whatever ``--refit`` says (a tune trial is scored on validation, prune keeps its zeros).

    Raises:
        CnnlabError: ``--refit on`` without a validation split to choose the epochs.
    """
    mode = config.transfer.refit
    if mode == "off":
        return "--refit off"
    if hooked:
        return "a command's own training (distill, prune or tune)"
    if not len(data.splits["val"]):
        if mode == "on":
            raise CnnlabError(
                "--refit on needs a validation split to choose the epochs it refits; "
                "give --val-split (e.g. auto) or use --refit off"
            )
        return "no validation split"
    if mode == "on":
        return ""
    pool = len(data.splits["train"]) + len(data.splits["val"])
    reasons = [
        (not pretrained, "trained from scratch"),
        (pool >= REFIT_MAX_IMAGES, f"{pool:,} train + val images (auto refits below {REFIT_MAX_IMAGES:,})"),
        (bool(config.train.time_budget), "a time budget"),
        (several, "several processes"),
    ]
    return next((f"{why}; --refit on refits anyway" for applies, why in reasons if applies), "")


@dataclass(frozen=True)
class RefitStage:
    """A validated stage as the refit trains it: its plan (schedule length) and the epochs validation chose."""

    stage: Stage
    epochs: int

    @property
    def name(self) -> str:
        return PREFIX + self.stage.name

    @property
    def replays(self) -> bool:
        """True when the stage's schedule steps on validation (plateau): the refit replays its rates."""
        return self.stage.scheduler == "plateau"

    def plan(self) -> Stage:
        """The stage the refit trains: the chosen epochs; a per-epoch schedule is replayed (``ReplayRates``)."""
        return dataclasses.replace(
            self.stage, name=self.name, epochs=self.epochs, scheduler="none" if self.replays else self.stage.scheduler
        )


def chosen_stages(plan: list[Stage], records: list[StageRecord], config: RunConfig) -> list[RefitStage]:
    """The stages the refit trains, each for its best epoch on validation: the first stage, and a later
    one only when its weights replaced the earlier stage's (kept on validation)."""
    done = {record.name: record for record in records}
    chosen = []
    for index, stage in enumerate(plan):
        record = done.get(stage.name)
        if record is None or (index and not record.replaced_best):
            continue
        best = (record.val_at_best.epoch if record.val_at_best else None) or record.epochs or stage.epochs
        scheduler = stage.scheduler or config.train.scheduler
        chosen.append(RefitStage(dataclasses.replace(stage, scheduler=scheduler), int(best)))
    return chosen


def refit_line(images: int, stages: list[RefitStage]) -> str:
    """'refit on 245 images (train + val) with stage 1: 12 epochs, stage 2: 3 epochs'."""
    parts = [
        f"stage {index + 1}: {item.epochs} epoch{'s' if item.epochs != 1 else ''}" for index, item in enumerate(stages)
    ]
    return f"refit on {images:,} images (train + val) with " + ", ".join(parts)


def refit_data(data: PreparedData) -> PreparedData:
    """The run's data with train + val as the training split (val and test as they were)."""
    return dataclasses.replace(data, splits={**data.splits, "train": joined(data.splits["train"], data.splits["val"])})


class StopAfter(L.Callback):
    """Ends a refit stage after the chosen epochs (its Trainer runs the validated stage's length, for the schedule)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.epochs:  # resumed from the checkpoint of its last epoch
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class ReplayRates(L.Callback):
    """Sets each epoch's learning rate to the validated stage's at that epoch (the top group's; the
    others keep their ratio to it, as layer decay set them)."""

    def __init__(self, rates: list[float]) -> None:
        self.rates = rates

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        groups = trainer.optimizers[0].param_groups
        rate = self.rates[min(trainer.current_epoch, len(self.rates) - 1)]
        factor = rate / max(group["lr"] for group in groups)
        for group in groups:
            group["lr"] *= factor


def validated_rates(files: RunFiles, stage: str, epochs: int) -> list[float]:
    """The learning rate of each of a stage's first ``epochs`` epochs, from metrics.csv ([] if not recorded)."""
    history = load_history(files.metrics_csv)
    if "lr" not in history:
        return []
    rates = history[history["stage"] == stage].sort_values("stage_epoch")["lr"].head(epochs)
    return [] if rates.isna().any() else [float(rate) for rate in rates]


def joined_features(
    features: dict[str, FeatureSet], model: torch.nn.Module, data: PreparedData, config: RunConfig, normalize: Any
) -> dict[str, FeatureSet]:
    """Stage 1's cached features with the validation images joined to the training ones, in as many
    views: the training rows are reused, only the validation images' views are extracted."""
    train, val = features["train"], data.splits["val"]
    augment = build_batch_augment(config.augment, crop=normalize.crop) if train.views > 1 else None
    seed_streams(config.train.seed)
    extra = extract_features(model, val, normalize, augment=augment, views=train.views if augment else 1)
    row = train.features.shape[1:]  # (D,) pooled, or (C, H, W) for an own CNN whose head flattens
    rows = torch.cat(
        [train.features.reshape(train.views, -1, *row), extra.features.reshape(train.views, -1, *row)], dim=1
    )
    labels = torch.cat([train.labels[: len(train)], val.labels]).repeat(train.views)
    return {**features, "train": FeatureSet(rows.reshape(-1, *row), labels, train.views)}


def joined_cut(
    activation_cache: ActivationCache | None,
    model: torch.nn.Module,
    stage: Stage,
    config: RunConfig,
    data: PreparedData,
    normalize: Any,
) -> ActivationCache | None:
    """The fine-tuning stage's cut for the refit, its activations joined as the splits are (computed at
    the stage's start when the stages' own are not in memory, e.g. after a resume)."""
    if not stage.name.endswith("finetune"):
        return None
    if activation_cache is None:
        activation_cache, _ = plan_cut(model, [dataclasses.replace(stage, name="finetune")], config, data, normalize)
        if activation_cache is None:
            return None
    own = activation_cache.activations
    activations = {}
    if all(name in own for name in ("train", "val", "test")):
        activations = {"train": torch.cat([own["train"], own["val"]]), "val": own["val"], "test": own["test"]}
    return ActivationCache(activation_cache.cut, stage, activations)


def swap_in_refit(files: RunFiles) -> None:
    """best.ckpt (the validated model) becomes validated.ckpt, refit.ckpt becomes best.ckpt; each step
    can be repeated, so a run killed between them finishes it on resume."""
    if files.best.is_file() and not files.validated.is_file():
        partial = files.validated.with_suffix(".partial")
        shutil.copyfile(files.best, partial)
        os.replace(partial, files.validated)
    if files.refit.is_file():
        os.replace(files.refit, files.best)


@dataclass
class Refit:
    """One run's refit: what it trains and what it starts from.

    ``initial``: the model's weights before any stage (the pretrained backbone, the new head); ``data``: the
    stages' splits;
    ``features``: stage 1's cached features, when this process extracted them; ``activation_cache``: stage 2's
    cut, with the activations stage 1 caught.
    """

    stages: list[RefitStage]
    initial: dict[str, torch.Tensor]
    data: PreparedData  # the run's own splits (the stages')
    features: dict[str, FeatureSet] | None = None
    activation_cache: ActivationCache | None = None

    def record(self, run: RunRecord, data: PreparedData) -> RefitRecord:
        """run.json's ``refit`` (created at the refit's start, kept across resumes); ``data``: the refit's."""
        if run.refit is None:
            images, val = len(data.splits["train"]), len(data.splits["val"])
            run.refit = RefitRecord(
                line=refit_line(images, self.stages),
                images=images,
                train_images=images - val,
                val_images=val,
                chosen=[ChosenEpochs(stage=item.stage.name, epochs=item.epochs) for item in self.stages],
                stages=[],
                done=False,
            )
        return run.refit

    def frozen_features(self, ctx: Any, normalize: Any, position: int) -> dict[str, FeatureSet] | None:
        """The refit's features for a frozen stage: stage 1's, the validation images joined to the training ones.

        After a resume they are not in memory: extracted again as stage 1 did (same seed, same views),
        so a resumed refit trains as an uninterrupted one does. None: the stage trains on images.
        """
        if not use_feature_cache(self.stages[position].stage, ctx.config):
            return None
        if self.features is None:
            seed_streams(ctx.config.train.seed, position)
            self.features = stage_features(ctx.config, ctx.model, self.data, normalize, ctx.ranks)
        return joined_features(self.features, ctx.model, ctx.data, ctx.config, normalize)

    def train(
        self,
        ctx: Any,
        module_kwargs: dict[str, Any],
        resume_from: str | None,
        resumable: str | None,
        device_batch: int | None,
    ) -> tuple[ClassifierModule | None, bool]:
        """Trains the refit's stages not yet done (from ``resume_from`` for the stage it holds).

        ``ctx`` is the run's context with the refit's data (:func:`refit_data`); ``module_kwargs`` are
        built from it. Returns (the module holding the refit's weights, interrupted).
        """
        record = self.record(ctx.record, ctx.data)
        done = {r.name for r in record.stages if r.done}
        if resumable not in {item.name for item in self.stages}:
            resume_from = None
            if done and ctx.files.refit.is_file():  # between two refit stages: the last one's weights
                load_model_weights(ctx.model, ctx.files.refit)
            elif not done:
                ctx.model.load_state_dict(self.initial)
        say(f"\n{record.line}")
        log.info("the refit's validation figures would be on images it trains on: it has none; test is what counts")
        normalize = module_kwargs["normalize"]
        module = None
        for position, item in enumerate(self.stages):
            if item.name in done:
                continue
            stage = item.plan()
            features = self.frozen_features(ctx, normalize, position) if stage.head_only else None
            cut = joined_cut(self.activation_cache, ctx.model, stage, ctx.config, ctx.data, normalize)
            module, stage_record, interrupted = fit_refit_stage(
                ctx,
                item,
                module_kwargs,
                resume_from if item.name == resumable else None,
                features,
                cut,
                position,
                device_batch,
            )
            record.stages = [r for r in record.stages if r.name != item.name] + [stage_record]
            if interrupted:
                return module, True
            stage_record.done = True
            ctx.save_meta()
        if ctx.ranks.is_zero:
            swap_in_refit(ctx.files)
        record.done = True
        record.seconds = round(sum(r.seconds for r in record.stages), 2)
        record.validated_checkpoint = str(ctx.files.validated.relative_to(ctx.files.root))
        ctx.save_meta()
        return module, False


def fit_refit_stage(
    ctx: Any,
    item: RefitStage,
    module_kwargs: dict[str, Any],
    resume_from: str | None,
    features: dict[str, FeatureSet] | None,
    cut: ActivationCache | None,
    position: int,
    device_batch: int | None,
) -> tuple[ClassifierModule, RefitStageRecord, bool]:
    """One refit stage: the validated stage's module and data on train + val, for the chosen epochs, no validation."""
    stage = item.plan()
    if stage.lr == AUTO:  # --lr auto: the rate the finder picked for the validated stage (in config.yaml since)
        stage = dataclasses.replace(stage, lr=ctx.config.train.lr)
    clock = StageClock(checkpoint_seconds(resume_from))
    inputs = prepare_stage(ctx, stage, module_kwargs, None, position, device_batch, cut, None, features)
    own: list[L.Callback] = [StopAfter(item.epochs)]
    schedule = f"{stage.scheduler} over the validated stage's {item.stage.epochs} epochs, stopped after {item.epochs}"
    if item.replays:
        rates = validated_rates(ctx.files, item.stage.name, item.epochs)
        own.append(ReplayRates(rates or [float(stage.lr)]))
        schedule = "the validated epochs' learning rates, replayed" if rates else "a constant learning rate"
    callbacks = stage_callbacks(stage, clock, ctx.ranks, own)
    with quiet_lightning(), compile_fallback(ctx.config.train.compile):
        trainer, _ = build_trainer(
            inputs.train_cfg, ctx.files, item.stage.epochs, stage.name, extra_callbacks=callbacks, validate=False
        )
        interrupted = fit_until_ctrl_c(trainer, inputs.module, inputs.datamodule, resume_from)
    record = RefitStageRecord(
        name=stage.name,
        epochs=trainer.current_epoch,
        seconds=round(clock.seconds(), 2),
        lr=stage.lr,
        schedule=schedule,
        images=len(ctx.data.splits["train"]),
        feature_cache=inputs.cached,
        activation_cache=inputs.on_cut,
    )
    return inputs.module, record, interrupted
