"""Out-of-sample predicted probabilities for every image: k-fold cross-validation.

Confident learning needs, for each image, probabilities from a model that never trained on it.
With a pretrained backbone (or ``--weights``) the backbone's pooled features are computed once
and a logistic regression is cross-validated on them (scikit-learn; seconds). Without one, each
fold trains the run's own CNN from scratch on the other folds for ``--epochs`` epochs through
Lightning, as ``cnnlab train`` trains it, and scores the held-out fold.
"""

from __future__ import annotations

import dataclasses
import logging

import lightning as L
import numpy as np
import torch
from torch import nn

from cnnlab.augment.batch import alternating_flip, build_batch_augment
from cnnlab.config import RunConfig
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.pack_read import streamable
from cnnlab.data.preprocess import Preprocess
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.errors import CnnlabError, plural
from cnnlab.models.inference import predict_probs
from cnnlab.progress import Progress
from cnnlab.training.build import build_model
from cnnlab.training.callbacks import ThreadWatchTicks
from cnnlab.training.feature_cache import extract_features
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups
from cnnlab.training.trainer import quiet_lightning, resolve_precision

log = logging.getLogger("cnnlab")


def fold_of(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Each image's fold (0..folds-1), stratified by class and seeded.

    Raises:
        CnnlabError: when a class has fewer images than 2 (nothing to hold out and learn from).
    """
    from sklearn.model_selection import StratifiedKFold

    smallest = int(np.bincount(labels).min()) if len(labels) else 0
    if smallest < 2:
        raise CnnlabError("a class has fewer than 2 images; cross-validation needs at least 2 per class")
    k = max(2, min(folds, smallest))
    if k < folds:
        log.warning("--folds %d: the smallest class has %d images, so %d folds are used", folds, smallest, k)
    assignment = np.zeros(len(labels), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        assignment[held] = fold
    return assignment


def features_of(model: nn.Module, images: ImageSet, normalize: Normalize) -> np.ndarray:
    """The frozen backbone's pooled features of every image (one pass, with progress)."""
    with Progress("extracting backbone features", len(images)) as progress:
        return extract_features(model, images, normalize, progress=progress).features.numpy()


def probabilities_from_features(
    features: np.ndarray, labels: np.ndarray, folds: np.ndarray, num_classes: int, seed: int
) -> np.ndarray:
    """Out-of-fold probabilities of a standardised logistic regression on fixed features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probs = np.zeros((len(labels), num_classes))
    with Progress(
        "cross-validating a logistic regression on the features", int(folds.max()) + 1, unit="folds"
    ) as progress:
        for fold in range(int(folds.max()) + 1):
            train, held = folds != fold, folds == fold
            classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=seed))
            classifier.fit(features[train], labels[train])
            probs[np.ix_(held, classifier.classes_)] = classifier.predict_proba(features[held])
            progress.advance(1)
    return probs


def _fold_trainer(config: RunConfig) -> L.Trainer:
    return L.Trainer(
        max_epochs=config.train.epochs,
        accelerator=config.train.accelerator,
        devices=1,
        precision=resolve_precision(config.train),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[ThreadWatchTicks()],
    )


def probabilities_from_training(
    config: RunConfig, data: PreparedData, images: ImageSet, folds: np.ndarray, preprocess: Preprocess
) -> np.ndarray:
    """Out-of-fold probabilities of the run's own CNN, trained from scratch once per fold.

    Each fold trains ``--epochs`` epochs with the run's optimiser, augmentation and batch size; a
    plateau schedule watches validation loss, which cross-validation has none of, so it becomes cosine.
    """
    labels = images.labels.numpy()
    probs = np.zeros((len(labels), data.num_classes))
    scheduler = "cosine" if config.train.scheduler == "plateau" else config.train.scheduler
    train_cfg = dataclasses.replace(config.train, scheduler=scheduler, time_budget=None)
    normalize = Normalize.of(preprocess)
    count = int(folds.max()) + 1
    what = f"cross-validating {config.model.name}: {plural(count, 'training')} of "
    what += plural(config.train.epochs, "epoch")
    with Progress(what, count, unit="folds", quiet_below=0) as progress:
        for fold in range(count):
            L.seed_everything(config.train.seed + fold, workers=True, verbose=False)
            held = np.flatnonzero(folds == fold)
            fold_data = PreparedData(
                {
                    "train": images.subset(np.flatnonzero(folds != fold)),
                    "val": images.subset(held),
                    "test": images.subset(held),
                },
                data.class_names,
                data.source,
                crop_pct=data.crop_pct,
                crop=data.crop,
                crop_mode=data.crop_mode,
            )
            model = apply_speedups(build_model(config, data.num_classes, preprocess), config.train)
            module = ClassifierModule(
                model,
                data.num_classes,
                normalize,
                train_cfg,
                augment=build_batch_augment(
                    config.augment, crop=data.crop, loader_flips=config.augment.flip_mode == "alternate"
                ),
                label_smoothing=config.augment.label_smoothing,
            )
            with quiet_lightning():
                _fold_trainer(config).fit(
                    module,
                    datamodule=ImageDataModule(
                        fold_data,
                        config.data.batch_size,
                        config.train.seed,
                        train_by_position=alternating_flip(config.augment, config.train.seed),
                    ),
                )
            held_set = fold_data.splits["val"]
            for start, batch in predict_probs(model, held_set.for_pass, normalize):
                probs[held[start : start + len(batch)]] = batch.numpy()
            progress.advance(1)
    return probs


def all_images(data: PreparedData) -> ImageSet:
    """Every split's images as one set (train, val, test), without copying a stored split.

    Raises:
        CnnlabError: for packed shards, whose training split streams and cannot be indexed.
    """
    sets = [data.splits[name] for name in ("train", "val", "test")]
    if any(streamable(s) is not None for s in sets):
        raise CnnlabError(f"'{data.source}' is packed shards; look for label issues in the folder it was packed from")
    labels = torch.cat([s.labels for s in sets])
    ids = [i for s in sets for i in s.ids]
    if all(not s.stored for s in sets):
        return ImageSet(torch.cat([s.source for s in sets]), labels, ids)  # type: ignore[misc]
    if all(s.stored and s.source is sets[0].source for s in sets):
        rows = np.concatenate([s.rows if s.rows is not None else np.arange(len(s)) for s in sets])
        return ImageSet(sets[0].source, labels, ids, rows=rows)
    return ImageSet(torch.cat([s.images for s in sets]), labels, ids)


def split_names(data: PreparedData) -> list[str]:
    """The split of each image of :func:`all_images`, in its order."""
    return [name for name in ("train", "val", "test") for _ in range(len(data.splits[name]))]
