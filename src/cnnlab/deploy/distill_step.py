"""Knowledge distillation as one training step: the student learns the labels and the teacher's soft outputs.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * cross-entropy

(Hinton et al., 2015: T^2 keeps the soft term's gradients comparable as T changes.) Each model
sees its own preprocessing: the teacher's input is the student's batch, converted to the
teacher's channels, size and mean/std. Without augmentation the teacher's logits are computed
once, from the images decoded at the teacher's own size, and ride along with each batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config.sections import Channels, CropMode
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import LUMA
from cnnlab.data.types import ImageSet
from cnnlab.deploy.prune_network import recalibrate_batchnorm
from cnnlab.models.inference import eval_mode, run_batches
from cnnlab.models.outputs import as_class_logits
from cnnlab.training.module import ClassifierModule


@dataclass
class Teacher:
    """A trained model and how its input must look."""

    model: nn.Module
    normalize: Normalize
    channels: Channels
    side: int
    crop_pct: float = 1.0  # its images are stored at side / crop_pct and centre-cropped (cnnlab.data.crop)
    crop_mode: CropMode = "center"  # how each file became that stored square (--crop-mode)
    mean: tuple[float, ...] | None = None  # its normalisation's mean: what --crop-mode border pads with

    def inputs(self, unit: torch.Tensor) -> torch.Tensor:
        """Student images in [0, 1] (N, C, H, W) as this teacher's normalised input."""
        if unit.shape[1] != self.channels:
            if self.channels == 3:
                unit = unit.expand(-1, 3, -1, -1)
            else:
                unit = (unit * torch.tensor(LUMA, device=unit.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if tuple(unit.shape[2:]) != (self.side, self.side):
            unit = F.interpolate(
                unit, size=(self.side, self.side), mode="bilinear", antialias=True, align_corners=False
            )
        return self.normalize.to(unit.device)(unit)

    @torch.no_grad()
    def logits(self, unit: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.model):
            out = as_class_logits(self.model(self.inputs(unit)))
        return out.float()

    def logits_of(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Logits of uint8 student images, converted batch by batch."""
        return torch.cat([self.logits(Normalize.to_unit(images[i : i + batch])) for i in range(0, len(images), batch)])

    def precompute(self, images: ImageSet) -> torch.Tensor:
        """Logits of every image of a split decoded at the teacher's own size and channels."""
        return torch.cat([logits for _, logits in run_batches(self.model, images.images, self.normalize)])


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher's softened distribution || student's), averaged over the batch."""
    return (
        F.kl_div(
            F.log_softmax(student / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            log_target=True,
            reduction="batchmean",
        )
        * temperature**2
    )


class DistillationModule(ClassifierModule):
    """A ClassifierModule whose training loss also pulls the student towards a teacher.

    The teacher is kept out of the module's children: it does not train, and checkpoints hold the
    student only (they load like any run's).
    """

    def __init__(self, *, teacher: Teacher, temperature: float, alpha: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperature, self.alpha = temperature, alpha
        self._teacher = [teacher]

    @property
    def teacher(self) -> Teacher:
        return self._teacher[0]

    def on_fit_start(self) -> None:
        self.teacher.model.to(self.device)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if len(batch) == 3:  # the teacher's logits were computed once and come with the batch
            images, labels, teacher_logits = batch
            x, labels = super().on_after_batch_transfer((images, labels), dataloader_idx)
            return x, labels, teacher_logits
        if self.trainer is None or not self.trainer.training:
            return super().on_after_batch_transfer(batch, dataloader_idx)
        images, labels = batch
        unit = Normalize.to_unit(images)
        if self.augment is not None:
            unit = self.augment(unit)  # the teacher sees the same augmented images as the student
        return self.normalize(unit), labels, self.teacher.logits(unit)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        ce = self._loss(logits, target)
        if self.alpha == 0:
            return ce  # exactly plain training
        return self.alpha * distillation_loss(logits, extra[0], self.temperature) + (1 - self.alpha) * ce


class FreshBatchNormStats(L.Callback):
    """Re-estimates the student's BatchNorm statistics on training images before each validation.

    A student trained on a few hundred photos takes a handful of optimiser steps per epoch, and
    BatchNorm's running statistics (momentum 0.1; 0.01 in EfficientNet-Lite0 and its pruned
    copies) lag far behind its weights, while training itself uses each batch's own statistics.
    mobilenetv3_small_100 from scratch on 144 photos of two textures (batch 128: 2 steps an epoch)
    answered one class in evaluation at every epoch (validation 50%) while its training accuracy
    rose to 79%; the same weights with re-estimated statistics scored 65%. Validation, the kept
    checkpoint and the test scores then judge the network that was trained. Not for a refitted pruned
    copy of the teacher: its statistics are the teacher's and stay fixed (``Student.fixed_statistics``).

    Args:
        images: uint8 training images (a sample: statistics settle within a few hundred).
    """

    def __init__(self, images: torch.Tensor, batch: int = 32) -> None:
        self.images, self.batch = images, batch

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) for m in pl_module.modules()
        ):
            return
        normalize, model = pl_module.normalize, pl_module.model
        assert isinstance(model, nn.Module) and isinstance(normalize, Normalize)
        with torch.no_grad():
            batches = [
                normalize(Normalize.to_unit(self.images[i : i + self.batch].to(pl_module.device)))
                for i in range(0, len(self.images), self.batch)
            ]
        recalibrate_batchnorm(model, batches)
