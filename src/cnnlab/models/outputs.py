"""One convention for what a classifier emits, whatever its head."""

from __future__ import annotations

import torch


def as_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) logits unchanged; a one-output sigmoid head's (N, 1) becomes (N, 2) as [0, z].

    softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], so cross-entropy on these logits is exactly
    binary cross-entropy on z, and every metric, report and prediction sees two classes.
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits
