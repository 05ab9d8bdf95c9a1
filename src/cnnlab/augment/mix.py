"""Mixup / CutMix with soft targets and label smoothing, timm-style (one mix per batch).

Why not ``timm.data.Mixup``: it draws from numpy's global RNG (no torch.Generator, so
``seed_everything``-style torch seeding and per-call generators do not reach it), asserts an even
batch size (a dataset's last, odd batch would crash unless the loader drops it), and mixes the
caller's tensor in place. The math is small, so it is written here with the same semantics:
partner = the batch reversed, lambda ~ Beta(alpha, alpha), CutMix's lambda corrected to the
box's clipped area, and timm's smoothing (off = s / K, on = 1 - s + s / K).
"""

from __future__ import annotations

import math
import random

import torch


def smooth_one_hot(y: torch.Tensor, num_classes: int, label_smoothing: float = 0.0) -> torch.Tensor:
    """(N,) int labels -> (N, num_classes) float targets with smoothing; rows sum to 1."""
    off = label_smoothing / num_classes
    out = torch.full((y.shape[0], num_classes), off, device=y.device, dtype=torch.float32)
    return out.scatter_(1, y.long().view(-1, 1), 1.0 - label_smoothing + off)


def _rng(generator: torch.Generator | None) -> random.Random:
    """A stdlib RNG seeded from torch (CPU), so torch.manual_seed or a generator controls it.

    Per-batch parameters are a handful of scalars; drawing them on the CPU avoids a GPU sync.
    """
    seed = torch.randint(0, 2**62, (1,), generator=generator).item()
    return random.Random(seed)


def _cutmix_box(h: int, w: int, lam: float, rng: random.Random) -> tuple[int, int, int, int]:
    """A box of area ~(1 - lam) * H * W centred uniformly, clipped to the image (timm's rand_bbox)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * ratio), int(w * ratio)
    cy, cx = rng.randrange(h), rng.randrange(w)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + (cut_h + 1) // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + (cut_w + 1) // 2, w)
    return top, bottom, left, right


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    mixup_alpha: float = 0.0,
    cutmix_alpha: float = 0.0,
    label_smoothing: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with its reverse by mixup or CutMix and return soft targets.

    When both alphas are > 0, one of the two is chosen per batch with probability 0.5. With both
    0, the images are returned as they are and the targets are smoothed one-hot.

    Args:
        x: Float batch (N, C, H, W), any device; not modified.
        y: Int labels (N,), same device.
        num_classes: K, the width of the returned targets.
        mixup_alpha: Beta(alpha, alpha) for mixup's lambda; 0 = off.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's lambda; 0 = off.
        label_smoothing: Mass spread evenly over all K classes.
        generator: Optional CPU torch.Generator for the per-batch draws.

    Returns:
        (mixed x, targets (N, K) float32 whose rows sum to 1), for a soft-target cross-entropy
        such as ``F.cross_entropy(logits, targets)``.
    """
    y1 = smooth_one_hot(y, num_classes, label_smoothing)
    if not (mixup_alpha > 0 or cutmix_alpha > 0) or x.shape[0] < 2:
        return x, y1
    rng = _rng(generator)
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < 0.5)
    lam = rng.betavariate(*(2 * [cutmix_alpha if use_cutmix else mixup_alpha]))
    partner = x.flip(0)  # timm's pairing: image i with image N-1-i, no index tensor needed
    if use_cutmix:
        h, w = x.shape[-2:]
        top, bottom, left, right = _cutmix_box(h, w, lam, rng)
        x = x.clone()
        x[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / float(h * w)  # the pasted box was clipped
    else:
        x = x * lam + partner * (1.0 - lam)
    return x, y1 * lam + y1.flip(0) * (1.0 - lam)
