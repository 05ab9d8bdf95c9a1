"""Builds the Lightning Trainer: devices, precision, callbacks and loggers in one place."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnnlab.config import TrainConfig
from cnnlab.io import atomic_write_bytes
from cnnlab.progress import in_notebook
from cnnlab.training.averaging import weight_averaging
from cnnlab.training.callbacks import CheapValidationTTA, EpochLines, ThreadWatchTicks
from cnnlab.training.console import verbose
from cnnlab.training.distributed import trainer_strategy
from cnnlab.training.history import HistoryCSVLogger
from cnnlab.training.optim import bf16_is_fast
from cnnlab.training.run_dir import RunFiles

log = logging.getLogger("cnnlab")


# Lightning messages that are noise for cnnlab's way of training, silenced only while it trains.
_LIGHTNING_NOISE = (
    ".*does not have many workers.*",  # batches come from memory: workers would only add copies
    ".*Experiment logs directory.*exists.*",
    ".*Checkpoint directory.*exists and is not empty.*",
    ".*LeafSpec.*",
    ".*module\\(s\\) in eval mode at the start of training.*",  # frozen BatchNorm, on purpose
    ".*overridden `on_after_batch_transfer`.*",  # intended: the module owns device-side work
    ".*TensorBoard support.*",
    ".*tensorboardX.*",
    ".*IterableDataset.*has `__len__` defined.*",  # packed data: litdata's loader, no multi-process workers
)
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Keeps the console to cnnlab's own lines while training: Lightning's device banners and
    hints are noise here. Logger levels and warning filters are restored afterwards."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        for pattern in _LIGHTNING_NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file, fsyncs, then renames: a kill -9 or a full disk
    mid-write leaves the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


# Precision less "auto", which resolve_precision settles
ResolvedPrecision = Literal["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true"]


def resolve_precision(cfg: TrainConfig) -> ResolvedPrecision:
    """The precision to train in.

    ``auto``: mixed precision where the hardware gains from it (CUDA), full fp32 on the CPU.
    ``bf16-mixed`` on a CPU without native bf16 (AVX512-BF16 or AMX) is emulated and slower than
    fp32, the opposite of what it is asked for (e.g. by a recipe): it falls back to 32-true.
    """
    on_cuda = torch.cuda.is_available() and cfg.accelerator in ("auto", "cuda", "gpu")
    if cfg.precision == "auto":
        if on_cuda:
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    if cfg.precision == "bf16-mixed" and not on_cuda and cfg.accelerator != "mps" and not bf16_is_fast():
        log.info("bf16-mixed would be emulated on this CPU (no AVX512-BF16 or AMX): training in 32-true")
        return "32-true"
    return cfg.precision


def run_autocast(cfg: TrainConfig) -> torch.dtype | None:
    """The dtype a run's model is scored in: the one it trained and validated in (Lightning
    validates a bf16-mixed run under bf16 autocast), so the test split is scored as validation
    chose the best epoch, and at the same speed; None for full precision."""
    return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(resolve_precision(cfg))


_BAR_REDRAWS_PER_SECOND = 4  # what an eye follows; Lightning's default is 100


class _RichEpochs(RichProgressBar):
    """Lightning's Rich bar, numbering epochs from 1 of N like cnnlab's log lines ("epoch 1/3"),
    not "Epoch 0/2", and moved a few times a second rather than after every batch.

    Lightning's bar updates its task and its metrics after every batch and redraws 100 times a
    second from a thread that competes with training for the interpreter: 13% of a one-epoch
    MNIST run's training time at batch 64 (``--recipe fast`` in a terminal against a pipe).
    """

    def __init__(self) -> None:
        super().__init__(leave=False, refresh_rate=_BAR_REDRAWS_PER_SECOND)
        self._moved = 0.0  # time.monotonic() of the last update

    def _due(self, batch_idx: int, total: float) -> bool:
        """Whether the bar moves after batch ``batch_idx``: every 1/redraws s, and at an epoch's last batch."""
        now = time.monotonic()
        if batch_idx + 1 < total and now - self._moved < 1 / _BAR_REDRAWS_PER_SECOND:
            return False
        self._moved = now
        return True

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._due(batch_idx, self.total_train_batches):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._due(batch_idx, self.total_val_batches_current_dataloader):
            super().on_validation_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)

    def _get_train_description(self, current_epoch: int) -> str:
        text = f"epoch {current_epoch + 1}" + (f"/{self.trainer.max_epochs}" if self.trainer.max_epochs else "")
        return f"{text:{len(self.validation_description)}}"  # as wide as "Validation": no flicker


class _TqdmEpochs(TQDMProgressBar):
    """Lightning's notebook bar, numbering epochs from 1 of N like the log lines."""

    def on_train_epoch_start(self, trainer: L.Trainer, *args: object) -> None:
        super().on_train_epoch_start(trainer, *args)
        total = f"/{trainer.max_epochs}" if trainer.max_epochs else ""
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}{total}")


def _progress_bar() -> L.Callback | None:
    """A live bar in a terminal (one per stage, redrawn each epoch), a notebook's own widget bar in
    Jupyter (tqdm.auto); none in logs and CI, where bars turn into garbage."""
    if sys.stderr.isatty():
        return _RichEpochs()
    if in_notebook():
        return _TqdmEpochs()
    return None


def _checkpoints(files: RunFiles, monitor: str, validate: bool) -> ModelCheckpoint:
    """best.ckpt (lowest ``monitor``) and last.ckpt; for a refit, its latest epoch in refit.ckpt."""
    return ModelCheckpoint(
        dirpath=files.checkpoints,
        filename=files.best.stem if validate else files.refit.stem,
        monitor=monitor if validate else None,  # None: the latest epoch is kept
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,  # overwrite best.ckpt rather than best-v1.ckpt
    )


def _trainer_callbacks(
    cfg: TrainConfig, checkpoint: ModelCheckpoint, progress: L.Callback | None, validate: bool
) -> list[L.Callback]:
    """The callbacks every stage's Trainer has, before the stage's own (``stage_fit.stage_callbacks``)."""
    # Early stopping always watches the loss: an error count on a small validation split jumps by
    # whole images and stopped a fine-tuning stage at its first dip (a 40-image split).
    stopping = [EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience)] if validate else []
    # Beside any bar, the epochs worth a line of their own (every one with --verbose): cnnlab.training.callbacks
    lines = EpochLines(every_epoch=verbose())
    return [
        checkpoint,
        *stopping,
        *([progress] if progress else []),
        lines,
        *weight_averaging(cfg),
        CheapValidationTTA(),
        ThreadWatchTicks(),
    ]


def _loggers(files: RunFiles, stage: str, extra_loggers: list[Logger] | None) -> list[Logger]:
    """Where a validated stage's epoch metrics go: metrics.csv, TensorBoard, and any tracker's."""
    return [
        HistoryCSVLogger(save_dir=files.root, stage=stage),
        TensorBoardLogger(save_dir=files.root, name=files.tensorboard.name, version="", default_hp_metric=False),
        *(extra_loggers or []),
    ]


def build_trainer(
    cfg: TrainConfig,
    files: RunFiles,
    max_epochs: int,
    stage: str,
    extra_callbacks: list[L.Callback] | None = None,
    monitor: str = "val_loss",
    extra_loggers: list[Logger] | None = None,
    validate: bool = True,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with the lesson's callbacks: best/last checkpoints and early stopping.

    Build and fit it inside :func:`quiet_lightning`.

    Args:
        monitor: the logged validation figure (lower is better) that picks the best checkpoint:
            ``val_loss``, or a stage's criterion (``cnnlab.training.selection``).
        extra_loggers: more loggers of the epoch metrics (an experiment tracker's).
        validate: False for a refit on train + val (``cnnlab.training.refit``): no validation, no early
            stopping and no history; each epoch's weights go to refit.ckpt (and last.ckpt), best.ckpt is left alone.
    """
    checkpoint = _checkpoints(files, monitor, validate)
    progress = _progress_bar()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=trainer_strategy(cfg),
        use_distributed_sampler=False,  # cnnlab's batch samplers shard each epoch themselves (EpochBatches)
        precision=resolve_precision(cfg),
        deterministic=cfg.deterministic,
        callbacks=[*_trainer_callbacks(cfg, checkpoint, progress, validate), *(extra_callbacks or [])],
        # a refit's epochs are not the run's validated history (metrics.csv)
        logger=_loggers(files, stage, extra_loggers) if validate else False,
        limit_val_batches=None if validate else 0,
        enable_progress_bar=progress is not None,
        enable_model_summary=False,  # cnnlab prints its own, Keras-style, with output shapes
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # only epoch-level metrics are logged; silences a small-data warning
    )
    return trainer, checkpoint
