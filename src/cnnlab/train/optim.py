"""Optimiser and learning-rate schedule from the config (used by the LightningModule)."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from cnnlab.config import TrainConfig


def build_optimizer(params: Iterable[Any], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Adam (the lesson's), AdamW or SGD with Nesterov momentum, over ``params`` (or groups)."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int
) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` dict for ``cfg.scheduler``, or None for a constant LR.

    ``plateau`` steps once per epoch on val_loss (the lesson's ReduceLROnPlateau); ``onecycle``
    and ``cosine`` step every batch over ``total_steps``.
    """
    if cfg.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        return {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}
    if cfg.scheduler == "onecycle":
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=max(total_steps, 2), pct_start=0.25
        )
        return {"scheduler": scheduler, "interval": "step"}
    if cfg.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total_steps, 1), eta_min=cfg.min_lr
        )
        return {"scheduler": scheduler, "interval": "step"}
    return None
