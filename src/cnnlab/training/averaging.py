"""An exponential moving average (EMA) of the weights, validated, checkpointed and kept at the end.

Lightning's ``WeightAveraging`` callback does the work (it swaps the average in for validation,
saves it as the checkpoint's ``state_dict`` and copies it into the model when training ends);
this only supplies the averaging rule.
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

from cnnlab.config import TrainConfig


def ema_decay(decay: float, updates: int) -> float:
    """The decay for the ``updates``-th update: ``decay``, lower while few updates were averaged.

    ``(1 + n) / (10 + n)`` (as timm's ModelEmaV2 warm-up) keeps the average from clinging to the
    random initial weights when a short run has only a few hundred steps.
    """
    return min(decay, (1 + updates) / (10 + updates))


class EMAWeights(WeightAveraging):
    """EMA of the parameters and buffers (BatchNorm statistics too), updated every optimizer step.

    Args:
        decay: Weight of the old average at each step (0.99: the last ~100 steps count).
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        super().__init__(use_buffers=True, multi_avg_fn=self._update)

    @torch.no_grad()
    def _update(self, averages: list[torch.Tensor], currents: list[torch.Tensor], updates: torch.Tensor) -> None:
        keep = ema_decay(self.decay, int(updates))
        if averages[0].is_floating_point():
            torch._foreach_lerp_(averages, currents, 1 - keep)
        else:  # integer/bool buffers (BatchNorm's batch count, a flag): follow the model
            for average, current in zip(averages, currents, strict=True):
                average.copy_(current)


def weight_averaging(cfg: TrainConfig) -> list[L.Callback]:
    """The Trainer's weight-averaging callbacks for ``cfg.ema`` (none when it is 0)."""
    return [EMAWeights(cfg.ema)] if cfg.ema else []
