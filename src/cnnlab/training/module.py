"""The LightningModule: what one training step is. The Trainer owns the loop, devices and I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from cnnlab.config import TrainConfig
from cnnlab.data.normalize import Normalize
from cnnlab.models.outputs import as_class_logits
from cnnlab.training import rng
from cnnlab.training.optim import build_optimizer, build_scheduler

MixFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class ClassifierModule(L.LightningModule):
    """Wraps a classifier: pixel scaling and augmentation on the device, loss, metrics, optimiser.

    Batches arrive as uint8 (N, C, H, W); converting and augmenting after the transfer keeps the
    host-to-device copy 4x smaller and lets a GPU do the augmentation.
    """

    class_weights: torch.Tensor | None  # a buffer

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        normalize: Normalize,
        train_cfg: TrainConfig,
        augment: nn.Module | None = None,
        mix: MixFn | None = None,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        metadata: dict[str, Any] | None = None,
        param_groups: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        self.model, self.normalize, self.augment, self.mix = model, normalize, augment, mix
        self.train_cfg, self.label_smoothing = train_cfg, label_smoothing
        self.register_buffer("class_weights", class_weights, persistent=False)
        self.metadata = metadata or {}  # class names, preprocessing: saved in every checkpoint
        self.param_groups = param_groups  # a transfer stage's groups (own LR per block); None: all trainable
        # Metric objects: with several processes they sum their counts over all ranks, so val_loss
        # (what early stopping, the LR schedule and the best checkpoint watch) is one number everywhere,
        # the mean over every validation image as with one process.
        self.train_loss = MeanMetric()  # weighted by batch size, as Lightning's mean of a logged loss
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self._train_logged = False  # train_loss and train_acc handed to Lightning this epoch
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(x)
        return logits

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return as_class_logits(self(x))  # a one-output sigmoid head becomes [0, z]: CE == BCE

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        images, labels = batch
        unit = Normalize.to_unit(images)
        if self.augment is not None and self.trainer is not None and self.trainer.training:
            unit = self.augment(unit)  # train batches only: never validation or test
        return self.normalize(unit), labels

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Soft targets from mixup/cutmix already carry the label smoothing.
        smoothing = 0.0 if target.ndim == 2 else self.label_smoothing
        return F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=smoothing)

    def training_loss(self, logits: torch.Tensor, target: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The loss minimised; ``extra`` holds what the batch carries besides images and labels
        (a subclass's, e.g. a teacher's logits for distillation)."""
        return self._loss(logits, target)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels, *extra = batch
        target = labels
        if self.mix is not None:
            images, target = self.mix(images, labels)  # soft targets (N, classes)
        logits = self._logits(images)
        loss = self.training_loss(logits, target, *extra)
        self._count_train_batch(loss, logits, labels)
        return loss

    def _count_train_batch(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Adds the batch to the epoch's train_loss and train_acc, computed when the epoch ends.

        Metric objects are updated each step and logged once an epoch: each ``self.log`` walks
        Lightning's record of the value (about 0.4 ms), and a metric's call would also score each
        batch alone, which nothing reads (``on_step=False``); 8% of a one-epoch MNIST run at batch
        64 went to these. The figures are the same: the sums over the epoch's batches.
        """
        self.train_loss.update(loss.detach(), weight=len(labels))
        self.train_acc.update(logits.detach(), labels)
        if not self._train_logged:  # once per epoch (a resumed epoch too): Lightning keeps the objects
            self._train_logged = True
            self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self._logits(images)
        self.val_acc.update(logits, labels)
        self.val_loss.update(self._loss(logits, labels), weight=len(labels))  # weighted: a last batch may be smaller
        self.log("val_loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log("val_acc", self.val_acc, on_epoch=True, prog_bar=True)

    def on_train_start(self) -> None:
        if self.trainer.world_size > 1:  # after a resume's RNG restore, which gives every rank rank 0's state
            rng.split_for_rank(self.trainer.global_rank)

    def on_train_epoch_start(self) -> None:
        self._train_logged = False
        lr = max(group["lr"] for group in self.trainer.optimizers[0].param_groups)  # the top group's
        self.log("lr", lr, on_step=False, on_epoch=True, sync_dist=True)  # the same on every rank

    def configure_optimizers(self) -> Any:
        params: list[Any]  # parameter groups, or parameters
        if self.param_groups:  # noqa: SIM108  with `or`, mypy types the comprehension as groups
            params = self.param_groups
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
        lr = self.train_cfg.lr
        assert not isinstance(lr, str), "lr auto: the learning-rate finder sets the rate before training"
        optimizer = build_optimizer(params, self.train_cfg, lr)
        scheduler = build_scheduler(optimizer, self.train_cfg, int(self.trainer.estimated_stepping_batches))
        return {"optimizer": optimizer, "lr_scheduler": scheduler} if scheduler else optimizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cnnlab"] = self.metadata
        checkpoint["cnnlab_rng"] = rng.capture()  # a resumed run replays the same dropout/augment draws

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "cnnlab_rng" in checkpoint:
            rng.restore(checkpoint["cnnlab_rng"])
