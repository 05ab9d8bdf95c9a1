"""Builds the Lightning Trainer: devices, precision, callbacks and loggers in one place."""

from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from cnnlab.config import TrainConfig
from cnnlab.io import atomic_write_bytes
from cnnlab.train.callbacks import EpochLines
from cnnlab.train.history_logger import HistoryCSVLogger
from cnnlab.train.time_budget import TimeBudget
from cnnlab.train.run_dir import RunFiles


def quiet_lightning() -> None:
    """Keeps the console to cnnlab's own lines: Lightning's device banners and hints are noise here."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",  # batches come from memory: workers would only add copies
        ".*Experiment logs directory.*exists.*",
        ".*Checkpoint directory.*exists and is not empty.*",
        ".*LeafSpec.*",
        ".*module\\(s\\) in eval mode at the start of training.*",  # frozen BatchNorm, on purpose
        ".*overridden `on_after_batch_transfer`.*",  # intended: the module owns device-side work
        ".*TensorBoard support.*",
        ".*tensorboardX.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temp file, fsyncs, then renames: a kill -9 or a full disk
    mid-write leaves the previous checkpoint intact, never half a file."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


def resolve_precision(cfg: TrainConfig) -> str:
    """``auto``: mixed precision where the hardware gains from it (CUDA), full fp32 on the CPU."""
    if cfg.precision != "auto":
        return cfg.precision
    if torch.cuda.is_available() and cfg.accelerator in ("auto", "cuda", "gpu"):
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def build_trainer(
    cfg: TrainConfig,
    files: RunFiles,
    max_epochs: int,
    extra_callbacks: list[L.Callback] | None = None,
    checkpoint_name: str = "best",
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with the lesson's callbacks: best/last checkpoints and early stopping."""
    quiet_lightning()
    checkpoint = ModelCheckpoint(
        dirpath=files.checkpoints,
        filename=checkpoint_name,
        monitor="val_loss",
        mode="min",
        save_top_k=1,
        save_last=True,
        enable_version_counter=False,  # overwrite best.ckpt rather than best-v1.ckpt
    )
    early_stopping = EarlyStopping(monitor="val_loss", mode="min", patience=cfg.patience)
    extra_callbacks = list(extra_callbacks or [])
    has_budget = any(isinstance(c, TimeBudget) for c in extra_callbacks)
    budget = [TimeBudget(cfg.time_budget)] if cfg.time_budget and not has_budget else []
    # A live bar in a terminal; plain epoch lines in logs and CI, where bars turn into garbage.
    progress = RichProgressBar(leave=True) if sys.stderr.isatty() else EpochLines()
    trainer = L.Trainer(
        max_epochs=max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=resolve_precision(cfg),
        deterministic=cfg.deterministic,
        callbacks=[checkpoint, early_stopping, progress, *budget, *extra_callbacks],
        logger=[
            # Flushed at every (epoch-level) log call: a killed run keeps its history.
            HistoryCSVLogger(save_dir=files.root, name="", version="", flush_logs_every_n_steps=1),
            TensorBoardLogger(save_dir=files.root, name="tensorboard", version="", default_hp_metric=False),
        ],
        enable_progress_bar=sys.stderr.isatty(),
        enable_model_summary=False,  # cnnlab prints its own, Keras-style, with output shapes
        plugins=[AtomicCheckpointIO()],
        num_sanity_val_steps=0,
        log_every_n_steps=1,  # only epoch-level metrics are logged; silences a small-data warning
    )
    return trainer, checkpoint
