"""One Lightning ``fit`` per transfer stage: frozen head training, then fine-tuning the top.

Each stage has its own optimiser (only trainable parameters, at the stage's LR), early stopping
and LR schedule; a frozen stage trains on cached backbone features when it can.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import lightning as L
import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig
from cnnlab.data.loaders import ImageDataModule, eval_batch_size
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet
from cnnlab.models.outputs import as_class_logits
from cnnlab.models.summary import trainable_table
from cnnlab.train.feature_cache import FeatureDataModule, FeatureHeadModule, cache_features
from cnnlab.train.module import ClassifierModule
from cnnlab.train.stages import FrozenBatchNormEval, Stage, apply_stage, stage_param_groups, use_feature_cache
from cnnlab.train.trainer import build_trainer

log = logging.getLogger("cnnlab")
AUGMENTED_VIEWS = 5  # augmented copies of the training set cached for a frozen stage


@dataclasses.dataclass
class StageOutcome:
    """What one stage leaves: the module holding the best weights, and its record for run.json."""

    module: ClassifierModule
    record: dict[str, Any]
    interrupted: bool


def image_accuracy(model: torch.nn.Module, normalize: Normalize, image_set: ImageSet) -> float:
    """Top-1 accuracy on uint8 images, batched, in eval mode (the mode is restored)."""
    modes = [(module, module.training) for module in model.modules()]  # frozen BN stays in eval
    model.eval()
    device = next(model.parameters()).device
    normalize = normalize.to(device)
    correct, size = 0, eval_batch_size(image_set.images.shape, device)
    with torch.inference_mode():
        for start in range(0, len(image_set), size):
            batch = image_set.images[start : start + size].to(device)
            logits = as_class_logits(model(normalize(Normalize.to_unit(batch))))
            correct += int((logits.argmax(1).cpu() == image_set.labels[start : start + size]).sum())
    for module, training in modes:
        module.training = training
    return correct / max(1, len(image_set))


_WHAT_TRAINS = {"head": "the head trains on a frozen backbone", "top": "the head and the backbone's top train",
                "all": "every layer trains"}


def _feature_device(config: RunConfig) -> str:
    """Where to run the one feature-extraction pass: the training accelerator when there is one."""
    wanted = config.train.accelerator
    if torch.cuda.is_available() and wanted in ("auto", "cuda", "gpu"):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and wanted in ("auto", "mps"):
        return "mps"
    return "cpu"


def stage_train_config(config: RunConfig, stage: Stage) -> Any:
    """The run's training options with the stage's length and learning rate."""
    return dataclasses.replace(config.train, epochs=stage.epochs, lr=stage.lr)


def fit_stage(
    ctx: Any,
    stage: Stage,
    module_kwargs: dict[str, Any],
    resume_from: str | None,
    best_so_far: float | None,
    fit_kwargs: dict[str, Any],
) -> StageOutcome:
    """Trains one stage; returns the module with the stage's best weights loaded.

    Args:
        best_so_far: the previous stage's best val_loss: best.ckpt is replaced only by a better one.
        fit_kwargs: passed to ``trainer.fit`` (the caller handles interrupts and errors around it).
    """
    started = time.perf_counter()  # a frozen stage's time includes extracting its features
    config, model, data = ctx.config, ctx.model, ctx.data
    train_cfg = stage_train_config(config, stage)
    trainable, frozen = apply_stage(model, stage, config.transfer)
    groups = stage_param_groups(model, stage, config.train.weight_decay)
    kwargs = {**module_kwargs, "train_cfg": train_cfg, "param_groups": groups}
    kwargs["metadata"] = {**module_kwargs["metadata"], "stage": stage.name}
    cached = use_feature_cache(stage, config)
    print(f"\nstage '{stage.name}': {_WHAT_TRAINS[stage.prepare]}"
          f"{' (backbone features computed once, then cached)' if cached else ''}, "
          f"lr {stage.lr:g}, up to {stage.epochs} epochs\n{trainable_table(model)}", flush=True)
    balanced = config.data.sampler == "balanced"
    if cached:
        augment = build_batch_augment(config.augment)
        L.seed_everything(config.train.seed, workers=True, verbose=False)  # same augmented views on resume
        features = cache_features(model, data, kwargs["normalize"], augment=augment,
                                  train_views=AUGMENTED_VIEWS if augment is not None else 1,
                                  device=_feature_device(config))
        module: ClassifierModule = FeatureHeadModule(model=model, num_classes=data.num_classes, **{
            k: v for k, v in kwargs.items() if k not in ("model", "num_classes")})
        datamodule: L.LightningDataModule = FeatureDataModule(features, config.data.batch_size, config.train.seed, balanced)
    else:
        module = ClassifierModule(**kwargs)
        datamodule = ImageDataModule(data, config.data.batch_size, config.train.seed, balanced)
    trainer, checkpoint = build_trainer(train_cfg, ctx.files, stage.epochs,
                                        extra_callbacks=[FrozenBatchNormEval(stage.bn_eval)])
    if best_so_far is not None and ctx.files.best.is_file() and resume_from is None:
        checkpoint.best_model_score = torch.tensor(best_so_far)
        checkpoint.best_model_path = str(ctx.files.best)
    interrupted = False
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, **fit_kwargs)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown, then exit(1)
        if not trainer.interrupted:
            raise
        interrupted = True
    seconds = time.perf_counter() - started
    best_score = checkpoint.best_model_score
    record = {
        "name": stage.name,
        "epochs": trainer.current_epoch,
        "seconds": round(seconds, 2),
        "lr": stage.lr,
        "params_trainable": trainable,
        "params_frozen": frozen,
        "feature_cache": cached,
        "best_val_loss": float(best_score) if best_score is not None else None,
        "best_checkpoint": checkpoint.best_model_path or None,
    }
    return StageOutcome(module, record, interrupted)
