"""``fit``: from a config to a trained model in a run folder (evaluation is the next package's)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

import lightning as L
import torch

import cnnlab
from cnnlab.augment.batch import build_batch_augment
from cnnlab.augment.mix import mix_batch
from cnnlab.augment.presets import meaning_warnings
from cnnlab.config import RunConfig, save_config
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import InputNeeds, prepare_data
from cnnlab.data.types import PreparedData
from cnnlab.models import model_input, resolve_name
from cnnlab.models.summary import count_parameters, model_summary
from cnnlab.io import atomic_write_text
from cnnlab.train.build import build_model, preprocess_meta
from cnnlab.train.checkpoint import load_module_weights
from cnnlab.train.module import ClassifierModule
from cnnlab.train.run_dir import RunFiles, new_run_dir, write_meta, write_skipped
from cnnlab.train.trainer import build_trainer

log = logging.getLogger("cnnlab")


@dataclass
class FitResult:
    """What training leaves for evaluation: the run folder, the best model and the data."""

    files: RunFiles
    module: ClassifierModule
    data: PreparedData
    meta: dict[str, Any]


def _class_weights(data: PreparedData) -> torch.Tensor:
    counts = torch.tensor(data.splits["train"].class_counts(data.num_classes), dtype=torch.float32)
    return counts.sum() / (counts.clamp(min=1) * len(counts))  # inverse frequency, mean ~1


def fit(config: RunConfig, command: str) -> FitResult:
    """Trains a model as ``config`` says and leaves a run folder with its best checkpoint.

    Raises:
        CnnlabError: for bad data or options, before any expensive work where possible.
    """
    started = time.perf_counter()
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    wanted = model_input(config.model.name, config.model.pretrained)
    data = prepare_data(config.data, config.train.seed, InputNeeds(wanted.channels, wanted.image_size))
    for warning in meaning_warnings(config.augment, data.channels, data.class_names):
        log.warning(warning)
    preprocess = preprocess_meta(data, config)
    model = build_model(config, data.num_classes, preprocess)
    files = new_run_dir(config)
    save_config(config, files.config)
    write_skipped(files, data.skipped)
    if data.skipped:
        log.warning("%d files skipped (unreadable or not images): see %s", len(data.skipped), files.skipped)
    summary = model_summary(model, (data.channels, *data.image_size))
    atomic_write_text(files.summary, summary + "\n")
    total, trainable = count_parameters(model)
    meta: dict[str, Any] = {
        "name": files.root.name,
        "created": dt.datetime.now().isoformat(timespec="seconds"),
        "cnnlab_version": cnnlab.__version__,
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
    print(summary)

    aug = config.augment
    mix = None
    if aug.mixup > 0 or aug.cutmix > 0:
        mix = partial(mix_batch, num_classes=data.num_classes, mixup_alpha=aug.mixup,
                      cutmix_alpha=aug.cutmix, label_smoothing=aug.label_smoothing)
    module = ClassifierModule(
        model,
        data.num_classes,
        Normalize(preprocess["mean"], preprocess["std"]),
        config.train,
        augment=build_batch_augment(aug),
        mix=mix,
        label_smoothing=aug.label_smoothing,
        class_weights=_class_weights(data) if config.train.class_weights == "auto" else None,
        metadata={k: meta[k] for k in ("class_names", "preprocess", "model")},
    )
    datamodule = ImageDataModule(data, config.data.batch_size, config.train.seed, config.data.sampler == "balanced")
    trainer, checkpoint = build_trainer(config.train, files, config.train.epochs)
    fit_started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    train_seconds = time.perf_counter() - fit_started
    best_path = checkpoint.best_model_path or str(files.last)
    load_module_weights(module, best_path)  # EarlyStopping's "restore best weights"
    best_score = checkpoint.best_model_score
    meta["stages"] = [{
        "name": "train",
        "epochs": trainer.current_epoch,
        "seconds": round(train_seconds, 2),
        "best_val_loss": float(best_score) if best_score is not None else None,
    }]
    meta["timing"] = {"train_seconds": round(train_seconds, 2),
                      "total_seconds": round(time.perf_counter() - started, 2)}
    meta["status"] = "trained"
    write_meta(files, meta)
    return FitResult(files, module, data, meta)
