"""Ctrl-C during training, in one place: what stops, what is kept, and how the run says so.

Three moments: while a stage prepares its inputs (features, activations: :class:`PreparationInterrupted`,
raised by :func:`preparing`), inside an epoch (Lightning stops at a step: :func:`fit_until_ctrl_c`
returns True) and around them (``cnnlab.training.run_fit`` puts the run on record as interrupted and raises
:class:`TrainingInterrupted`, with what to resume from).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import lightning as L

from cnnlab.training.run_dir import RunFiles

if TYPE_CHECKING:
    from cnnlab.training.run_fit import FitResult


class PreparationInterrupted(KeyboardInterrupt):
    """Ctrl-C while a stage prepares its inputs (features, activations), before its first epoch.

    ``what`` names the work; ``saved`` (filled in by ``fit_stage``) says what the run keeps.
    """

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what, self.saved = what, ""


@contextlib.contextmanager
def preparing(what: str) -> Iterator[None]:
    """Turns a Ctrl-C inside into :class:`PreparationInterrupted` naming ``what`` was running."""
    try:
        yield
    except PreparationInterrupted:
        raise
    except KeyboardInterrupt:
        raise PreparationInterrupted(what) from None


def fit_until_ctrl_c(
    trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule, resume_from: str | None
) -> bool:
    """``trainer.fit`` (from ``resume_from`` if given); True when Ctrl-C stopped it (last.ckpt holds the last epoch)."""
    sigint = signal.getsignal(signal.SIGINT)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into a graceful shutdown, then exit(1)
        if not trainer.interrupted:
            raise
        return True
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, sigint)  # Lightning ignores Ctrl-C from then on; a notebook must not
    return False


class TrainingInterrupted(Exception):
    """Ctrl-C during training: last.ckpt holds the last finished epoch, ready for --resume.

    ``result`` (the model and data, to report what was done: a ``cnnlab.training.run_fit.FitResult``) stays in
    the process that trained: sent to another process (a spawned rank 0's waiting parent) only ``files`` travels.
    """

    def __init__(
        self, result: FitResult | None, files: RunFiles | None = None, saved: str = "the last finished epoch is saved"
    ) -> None:
        if files is None:
            assert result is not None, "an interruption carries its result or its files"
            files = result.files
        self.files: RunFiles = files
        super().__init__(f"interrupted: {self.files.root}")
        self.result, self.saved = result, saved

    def __reduce__(self) -> tuple[Any, ...]:
        return TrainingInterrupted, (None, self.files, self.saved)
