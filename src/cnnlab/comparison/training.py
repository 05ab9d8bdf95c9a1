"""Every compared model trained the same way on the user's data, each as a normal run folder.

The same config (split, seed, augmentation, image size, batch, optimiser and budget) goes to
``cnnlab train``'s own path, ``train_and_evaluate``, once per model; only the model and where
its weights start from differ. A model with ImageNet weights takes the transfer path (a frozen
stage on cached features, then fine-tuning), as ``cnnlab train --pretrained`` does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cnnlab.config import AugmentConfig, RunConfig, merge_config
from cnnlab.data.prepare import prepare_data
from cnnlab.data.preprocess import ModelInput
from cnnlab.errors import CnnlabError, plural
from cnnlab.evaluation.run_evaluation import train_and_evaluate
from cnnlab.training.run_dir import RunFiles, read_record
from cnnlab.training.stage_plan import plan_stages


def split_counts(config: RunConfig) -> dict[str, int]:
    """Decodes and splits the data once (failing fast on bad data): images per split.

    Every model then gets this same split: it depends only on the data, the split options and
    the seed, and the decoded images are cached for the trainings that follow.

    Raises:
        CnnlabError: a missing folder, too few classes or images, and the like.
    """
    data = prepare_data(config.data, config.train.seed, ModelInput(image_size=config.data.image_size))
    return {name: len(images) for name, images in data.splits.items()}


def _augmentation(augment: AugmentConfig) -> str:
    default = AugmentConfig()
    changed = [
        f"{f.name} {getattr(augment, f.name)}"
        for f in dataclasses.fields(augment)
        if getattr(augment, f.name) != getattr(default, f.name)
    ]
    return ", ".join(changed) if changed else "none"


def same_way(config: RunConfig, counts: dict[str, int], pretrained: bool) -> str:
    """One paragraph saying what every model's training had in common."""
    train = config.train
    split = " / ".join(f"{counts[name]} {name}" for name in ("train", "val", "test") if name in counts)
    if train.time_budget:
        budget = f"{train.time_budget:g} s of training each (every stage, feature extraction included)"
    else:
        budget = (
            f"at most {plural(train.epochs, 'epoch')} each (early stopping after "
            f"{plural(train.patience, 'epoch')} without progress)"
        )
    text = (
        f"Every model was trained by cnnlab train's own path on {config.data.source} with the same split "
        f"(seed {train.seed}: {split} images), image size {config.data.image_size} px, augmentation "
        f"{_augmentation(config.augment)}, batch {config.data.batch_size}, {train.optimizer} at lr "
        f"{train.lr if train.lr == 'auto' else format(train.lr, 'g')}, "
        f"and the same budget: {budget}."
    )
    if pretrained:
        stages = plan_stages(
            dataclasses.replace(config, model=dataclasses.replace(config.model, pretrained=True)),
            pretrained=True,
            warn=False,
        )
        text += (
            " Models with ImageNet weights took the transfer path ("
            + ", then ".join(_stage_text(stage.name, stage.epochs, stage.lr) for stage in stages)
            + "); models without them trained from scratch."
        )
    else:
        text += " Every model trained from scratch (no --pretrained)."
    return text


def _stage_text(name: str, epochs: int, lr: float | str) -> str:
    what = {
        "frozen": "a frozen backbone, head on cached features",
        "finetune": "fine-tuning the top",
        "train": "every layer",
    }.get(name, name)
    rate = lr if isinstance(lr, str) else f"{lr:g}"  # "auto": the finder picks it
    return f"{what}: up to {plural(epochs, 'epoch')} at lr {rate}"


def _run_row(files: RunFiles, metrics: dict[str, Any]) -> dict[str, Any]:
    run = read_record(files)
    stages = run.done_stages()
    last = stages[-1] if stages else None
    per_epoch = last.seconds / last.epochs if last is not None and last.epochs else None
    return {
        "test_acc": metrics.get("accuracy"),
        "train_seconds": run.timing.train_seconds,
        "epochs": sum(int(s.epochs or 0) for s in stages),
        "epoch_seconds": None if per_epoch is None else round(per_epoch, 3),  # last stage: the one on images
        "stages": ", ".join(f"{s.name} {s.epochs} ep {s.seconds:.1f} s" for s in stages),
        "run": str(files.root),
        "run_notes": "; ".join(run.notes),  # e.g. a time budget that feature extraction outran
    }


def train_model(
    base: RunConfig, name: str, folder: str, pretrained: bool, weights: str | None, runs_dir: Path, command: str
) -> dict[str, Any]:
    """Trains ``name`` with ``base``'s options into ``runs_dir/<folder>``; the row's training figures.

    A problem of this model alone (its input size, memory) becomes ``train_error``; Ctrl-C
    (``TrainingInterrupted``) is passed on once the interrupted run's report is written.
    """
    config = merge_config(
        base,
        {
            "model": {"name": name, "pretrained": pretrained, "weights": weights},
            "name": folder,
            "runs_dir": str(runs_dir),
        },
        where="the comparison",
    )
    start = (
        "ImageNet weights, transfer path"
        if pretrained
        else "weights file, transfer path"
        if weights
        else "from scratch"
    )
    try:
        files, metrics = train_and_evaluate(config, f"{command}  # model: {name}")
    except CnnlabError as exc:
        return {"trained_from": start, "train_error": str(exc)}
    return {"trained_from": start, **_run_row(files, metrics)}
