"""Small Lightning callbacks of cnnlab's own."""

from __future__ import annotations

import time

import lightning as L


class EpochLines(L.Callback):
    """One plain line per epoch, for logs and pipes where a live progress bar would be garbage.

    Epoch-level train metrics are final only after the epoch's hooks have run, so each line is
    printed when the next epoch starts (or training ends).
    """

    KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")

    def __init__(self, stage: str = "") -> None:
        self.stage = f"{stage} " if stage else ""
        self._pending: tuple[int, float] | None = None
        self._started = 0.0

    def _flush(self, trainer: L.Trainer) -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.4g}" for key in self.KEYS if key in metrics]
        print(f"{self.stage}epoch {epoch + 1}/{trainer.max_epochs}  " + "  ".join(parts) + f"  ({seconds:.1f}s)", flush=True)
        self._pending = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = (trainer.current_epoch, time.perf_counter() - self._started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
