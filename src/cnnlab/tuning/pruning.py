"""Optuna's pruner, fed by Lightning: each epoch's validation accuracy is reported, a poor trial stops.

Steps count epochs within a stage, and each stage has its own range of steps (stage k's epoch e
is step ``k * STAGE_STEPS + e``), so a trial's fine-tuning epochs are compared with the other
trials' fine-tuning epochs, never with their head-only ones.
"""

from __future__ import annotations

from typing import Any

import lightning as L

STAGE_STEPS = 1000


class PruneOnValidation(L.Callback):
    """Reports ``val_acc`` to an Optuna trial after every validation; stops the trial when the pruner says so.

    The stage that is running ends at the end of that epoch (its weights and record stay whole); a
    later stage of the same run does not start (``optuna.TrialPruned`` from its ``on_train_start``).
    """

    def __init__(self, trial: Any) -> None:
        self.trial, self.stage = trial, -1
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.stage += 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pruned_at is not None:
            import optuna

            raise optuna.TrialPruned(f"pruned at step {self.pruned_at}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get("val_acc")
        if value is None or trainer.sanity_checking:
            return
        step = self.stage * STAGE_STEPS + trainer.current_epoch
        self.trial.report(float(value), step)
        if self.pruned_at is None and self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True
