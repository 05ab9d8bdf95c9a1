"""Which epoch a stage keeps, and whether fine-tuning replaces stage 1's model, judged on validation.

Stage 1 keeps its epoch of lowest validation loss. Stage 2 is judged by ``--finetune-select``:

* ``accuracy`` (default): the epoch with the fewest validation errors, the loss breaking ties; it
  replaces stage 1's model only when it gets more than one more validation image right, or one
  more with a lower loss. On dtd10 fine-tuning raised validation accuracy (81% to 84-86%) while
  its loss rose (the model more confident where wrong), and the loss rule threw the gain away;
  one image is noise on a 100-image split, hence the margin.
* ``loss``: the lowest validation loss, replacing stage 1's only when lower (cnnlab until #20).

Either way the final model is never worse than stage 1's on validation in the criterion's
terms. The criterion is one number, lower better (``select_score``), logged as ``val_select``:
Lightning's ModelCheckpoint keeps the best epoch by it and, given stage 1's score less the
margin as the one to beat (``stage_fit.carry_best``), replaces stage 1's best.ckpt only when beaten.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from cnnlab.config import RunConfig
from cnnlab.training.record import StageRecord

SELECT_METRIC = "val_select"
MARGIN_IMAGES = 1  # stage 2 must get more than this many more validation images right (or as many, plus a lower loss)


def select_score(errors: int, loss: float, criterion: str) -> float:
    """The criterion as one number, lower better: errors plus the loss squashed into [0, 1) (accuracy),
    or the loss itself; infinite for a non-finite loss."""
    if not math.isfinite(loss):
        return math.inf
    return loss if criterion == "loss" else errors + loss / (1.0 + loss)


def stage_criterion(stage_name: str, config: RunConfig) -> str:
    """``accuracy`` or ``loss``: what ``stage_name`` selects its epoch by (stage 1 and full training: loss)."""
    return config.transfer.finetune_select if stage_name == "finetune" else "loss"


def monitor(criterion: str) -> str:
    """The logged metric the stage's checkpoint and its best-epoch record watch."""
    return "val_loss" if criterion == "loss" else SELECT_METRIC


def score_to_beat(previous: StageRecord | None, criterion: str) -> float | None:
    """What the stage must get below to replace the previous stage's best.ckpt (None: nothing to beat).

    Args:
        previous: the previous stage's run.json record (its ``val_at_best``: the kept epoch's figures).
    """
    if previous is None:
        return None
    best = previous.val_at_best
    if criterion == "loss" or best is None or best.loss is None:
        return previous.best_val_loss
    return select_score(best.errors, best.loss, criterion) - MARGIN_IMAGES


class ValidationRecord(L.Callback):
    """Scores each validation epoch on the stage's criterion (logged as ``val_select`` unless it is the
    loss) and keeps the figures of the stage's best epoch for run.json; saved in checkpoints, so a
    resume goes on from them.

    Args:
        criterion: ``accuracy`` or ``loss``.
        val_images: the size of the whole validation split (all processes together).
    """

    def __init__(self, criterion: str, val_images: int) -> None:
        self.criterion, self.val_images = criterion, val_images
        self.best: dict[str, Any] | None = None

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics: Any = pl_module  # a classifier module: its val_loss and val_acc torchmetrics
        loss = float(metrics.val_loss.compute())  # synced over processes, as Lightning logs it
        accuracy = float(metrics.val_acc.compute())
        errors = round((1.0 - accuracy) * self.val_images)
        score = select_score(errors, loss, self.criterion)
        if self.criterion != "loss":  # the loss criterion's checkpoint watches val_loss itself
            pl_module.log(SELECT_METRIC, score, on_epoch=True)
        if self.best is None or score < self.best["score"]:
            self.best = {
                "epoch": trainer.current_epoch + 1,
                "loss": loss,
                "accuracy": accuracy,
                "errors": errors,
                "images": self.val_images,
                "score": score,
            }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")


def verdict(record: StageRecord, previous: StageRecord) -> str:
    """Why ``record``'s stage did or did not replace ``previous``'s weights, in its criterion's terms."""
    name, own, before = record.name, record.val_at_best, previous.val_at_best
    if record.select == "loss" or own is None or before is None:
        ours, theirs = record.stage_best_val_loss, previous.best_val_loss
        if ours is None or theirs is None:
            return f"stage '{name}' has no validation loss to compare"
        if record.replaced_best if record.replaced_best is not None else ours < theirs:
            return f"stage '{name}' lowered the validation loss from {theirs:.4f} to {ours:.4f}"
        return f"stage '{name}' did not lower the validation loss ({ours:.4f} at best, against {theirs:.4f})"
    compared = (
        f"stage '{name}' got {own.images - own.errors} of {own.images} validation images right "
        f"(epoch {own.epoch}), stage '{previous.name}' {before.images - before.errors}"
    )
    losses = f"validation loss {own.loss:.4f} against {before.loss:.4f}"
    if record.replaced_best:
        return compared + ("" if before.errors - own.errors > MARGIN_IMAGES else f", with a lower {losses}")
    return (
        f"{compared}, {losses}: fine-tuning replaces it only with more than {MARGIN_IMAGES} more image "
        f"right, or {MARGIN_IMAGES} more with a lower loss"
    )
