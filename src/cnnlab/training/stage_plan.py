"""Two-stage transfer learning as data: which stages run, how long, at what LR, and what trains.

Stage 1 (``frozen``) trains the head on a frozen backbone at ``train.lr``; stage 2 (``finetune``)
also unfreezes the backbone's top (``transfer.finetune_blocks`` blocks, or
``transfer.finetune_layers`` layers) at ``transfer.finetune_lr`` on ``transfer.finetune_scheduler``.
A ``train`` stage trains everything at ``train.lr`` (from scratch, or ``--stages full``). One
``trainer.fit`` per stage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
from torch import nn

from cnnlab.config import RunConfig, TransferConfig
from cnnlab.config.sections import Scheduler
from cnnlab.errors import CnnlabError
from cnnlab.models.freeze import (
    freeze_backbone,
    param_groups,
    set_frozen_bn_eval,
    unfreeze_all,
    unfreeze_last_blocks,
    unfreeze_last_layers,
)
from cnnlab.models.summary import count_parameters
from cnnlab.training.record import KeptRecord, RefitRecord, RunRecord, StageRecord
from cnnlab.training.selection import verdict

log = logging.getLogger("cnnlab")

# Stage 1's default length on the feature cache, where an epoch costs milliseconds: a head on a
# few hundred images (two batches an epoch) was still improving after 15 epochs (measured on
# 240 photos: val loss 0.31 after 15, 0.26 after 50+). Early stopping usually ends it sooner.
CACHED_FROZEN_EPOCHS = 50


@dataclass(frozen=True)
class Stage:
    """One ``trainer.fit``: its name, length, learning rate and what is trainable."""

    name: str  # frozen | finetune | train
    epochs: int
    lr: float | Literal["auto"]  # "auto": the learning-rate finder picks it when the stage starts
    prepare: str  # head: only the head trains | top: head + backbone top | all: everything
    layer_decay: float | None = None  # LR decay per block going down (finetune/train only)
    # Backbone BatchNorm in inference mode even where unfrozen (Keras' fine-tuning advice): its
    # ImageNet statistics are kept, and the head sees the features it was trained on.
    bn_eval: bool = False
    scheduler: Scheduler | None = None  # the stage's own LR schedule (None: --scheduler)

    @property
    def head_only(self) -> bool:
        """True when the backbone is entirely frozen: the feature cache applies."""
        return self.prepare == "head"


def plan_stages(config: RunConfig, pretrained: bool, warn: bool = True) -> list[Stage]:
    """The stages ``config.transfer.stages`` asks for.

    Args:
        pretrained: the backbone starts from learned weights (``--pretrained`` or ``--weights``).
        warn: log a warning for frozen stages on a random backbone (once per run, not per call).

    ``auto`` is ``both`` when pretrained, else one ``train`` stage; ``frozen`` is stage 1 only;
    ``full`` is one stage with everything trainable. Stages of 0 epochs are left out.

    Raises:
        CnnlabError: when every stage would have 0 epochs.
    """
    transfer, train = config.transfer, config.train
    mode = transfer.stages
    if mode == "auto":
        mode = "both" if pretrained else "full"
    if mode != "full" and not pretrained and warn:
        log.warning("--stages %s on a randomly initialised backbone: only the head learns in stage 1", mode)
    frozen_epochs = transfer.frozen_epochs
    if frozen_epochs is None:
        cached = use_feature_cache(Stage("frozen", train.epochs, train.lr, "head"), config)
        frozen_epochs = max(train.epochs, CACHED_FROZEN_EPOCHS) if cached else train.epochs
    finetune_epochs = train.epochs if transfer.finetune_epochs is None else transfer.finetune_epochs
    if mode == "full":
        return [Stage("train", train.epochs, train.lr, "all", transfer.layer_decay)]
    stages = [Stage("frozen", frozen_epochs, train.lr, "head")]
    if mode == "both":
        stages.append(
            Stage(
                "finetune",
                finetune_epochs,
                transfer.finetune_lr,
                "top",
                transfer.layer_decay,
                bn_eval=True,
                scheduler=transfer.finetune_scheduler,
            )
        )
    stages = [stage for stage in stages if stage.epochs > 0]
    if not stages:
        raise CnnlabError("every stage has 0 epochs; set --frozen-epochs or --finetune-epochs above 0")
    return stages


def set_trainable(model: nn.Module, stage: Stage, transfer_cfg: TransferConfig) -> list[str]:
    """Sets ``requires_grad`` as ``stage`` trains (nothing else).

    Returns:
        The names of the backbone layers unfrozen for a fine-tuning stage, first to last.
    """
    if stage.prepare == "all":
        unfreeze_all(model)
        return []
    freeze_backbone(model)
    if stage.prepare != "top":
        return []
    if transfer_cfg.finetune_layers is not None:
        return unfreeze_last_layers(model, transfer_cfg.finetune_layers)
    return unfreeze_last_blocks(model, transfer_cfg.finetune_blocks)


def apply_stage(model: nn.Module, stage: Stage, transfer_cfg: TransferConfig) -> tuple[int, int]:
    """Sets ``requires_grad`` for ``stage`` and puts frozen BatchNorm layers in eval mode.

    Returns:
        (trainable, frozen) parameter counts, for the log and run.json.
    """
    names = set_trainable(model, stage, transfer_cfg)
    if names:
        log.info("fine-tuning %d backbone layers: %s ... %s", len(names), names[0], names[-1])
    model.train()
    set_frozen_bn_eval(model, include_trainable=stage.bn_eval)
    total, trainable = count_parameters(model)
    return trainable, total - trainable


def stage_param_groups(model: nn.Module, stage: Stage, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Optimizer groups for ``stage`` (trainable parameters only, layer decay if set)."""
    assert not isinstance(stage.lr, str), "lr auto: the learning-rate finder sets the rate before the groups"
    return param_groups(model, stage.lr, stage.layer_decay, weight_decay)


def use_feature_cache(stage: Stage, config: RunConfig) -> bool:
    """Whether ``stage`` can train the head on cached features instead of images.

    Needs a frozen backbone and ``transfer.feature_cache``; mixup/cutmix mix pixels, which cached
    features cannot reproduce, so they turn it off. Other augmentation is cached as fixed views.
    """
    mixing = config.augment.mixup > 0 or config.augment.cutmix > 0
    return stage.head_only and config.transfer.feature_cache and not mixing


def kept_weights(records: list[StageRecord]) -> KeptRecord:
    """Which stage's weights a run ended with, and why, from its finished stages' records.

    Each stage starts from the best weights so far and replaces them (best.ckpt) only when its
    best epoch beats them on the stage's criterion (``cnnlab.training.selection``), so a
    fine-tuning stage that makes validation worse leaves the stage-1 model in place.
    """
    kept, reasons = records[0], []
    for record in records[1:]:
        reasons.append(verdict(record, kept))
        if record.replaced_best:
            kept = record
    return KeptRecord(
        stage=kept.name, select=records[-1].select, why=f"weights of stage '{kept.name}' kept: " + "; ".join(reasons)
    )


def improvement_line(before: float, after: float) -> str:
    """The line logged after stage 2, accuracies as fractions: 'improvement ...: +1.23 points'."""
    return f"improvement from fine-tuning: {100.0 * (after - before):+.2f} points"


def record_final_accuracy(run: RunRecord, test_accuracy: float) -> None:
    """Gives the run's last stage the final evaluation's test accuracy, and the run its improvement line.

    The last stage ends with the weights the final evaluation scores, so its test accuracy is
    that evaluation's: the test split is scored once, not once per stage and again at the end.
    A last stage that was interrupted gets the score of the weights kept so far, and the run no
    improvement line: fine-tuning did not finish.
    """
    stages = run.stages
    if run.refit is not None and run.refit.done:  # every stage was scored before the refit
        record_refit_accuracy(run, run.refit, test_accuracy)
    elif not stages or stages[-1].test_acc is not None:
        return
    else:
        stages[-1].test_acc = test_accuracy
    first, last = (stages[0].test_acc, stages[-1].test_acc) if stages else (None, None)
    if len(stages) > 1 and first is not None and stages[-1].done and last is not None:
        run.improvement = improvement_line(first, last)


def record_refit_accuracy(run: RunRecord, refit: RefitRecord, test_accuracy: float) -> None:
    """After a refit the final evaluation scores the refit's model: its test accuracy goes to run.json's
    ``refit``, beside the validated model's (the kept stage's, scored before the refit)."""
    kept = run.kept.stage if run.kept is not None else None
    kept = kept or (run.stages[0].name if run.stages else None)
    validated = next((s.test_acc for s in run.stages if s.name == kept), None)
    refit.test_acc, refit.validated_test_acc = test_accuracy, validated
    if validated is not None:
        log.info(
            "refit on train + val: test accuracy %.2f%%, the validated model's %.2f%% (%+.2f points)",
            100 * test_accuracy,
            100 * validated,
            100 * (test_accuracy - validated),
        )


class FrozenBatchNormEval(L.Callback):
    """Keeps frozen BatchNorm layers in eval mode through Lightning's train/eval switches.

    Add to each stage's Trainer: ``extra_callbacks=[FrozenBatchNormEval(stage.bn_eval)]``;
    cheap when nothing is frozen.
    """

    def __init__(self, include_trainable: bool = False) -> None:
        self.include_trainable = include_trainable  # also the backbone's trainable BN layers

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's validation loop restores each module's mode afterwards, so once per
        # epoch is enough even with mid-epoch validation.
        set_frozen_bn_eval(getattr(pl_module, "model", pl_module), self.include_trainable)
