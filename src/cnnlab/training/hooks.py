"""What a command built on training changes in it (distillation, pruning with fine-tuning)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import lightning as L
import torch

from cnnlab.training.module import ClassifierModule


@dataclasses.dataclass
class TrainingHooks:
    """Changes to the normal training of a run's stages.

    ``module_factory`` builds the LightningModule from ClassifierModule's arguments; a custom one
    trains on images (never on cached features). ``train_extra`` rows are served with each training
    image; ``callbacks`` join the Trainer's. ``select`` overrides the criterion that picks each stage's
    kept epoch (``cnnlab.training.selection``: ``accuracy`` or ``loss``; None: the stage's own).
    """

    module_factory: Callable[..., ClassifierModule] = ClassifierModule
    train_extra: torch.Tensor | None = None
    callbacks: list[L.Callback] = dataclasses.field(default_factory=list)
    select: str | None = None

    @property
    def custom(self) -> bool:
        return self.module_factory is not ClassifierModule
