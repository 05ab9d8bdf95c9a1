"""Random-number-generator states as plain tensors and lists, so a resumed run draws the same
numbers as an uninterrupted one and checkpoints still load with ``weights_only=True``."""

from __future__ import annotations

import random
from typing import Any, cast

import lightning as L
import numpy as np
import torch


def capture() -> dict[str, Any]:
    """The torch (CPU and CUDA), NumPy and Python RNG states, in checkpoint-safe types."""
    # legacy=True (the default) gives the tuple, not the dict
    kind, keys, position, has_gauss, cached = cast(tuple[str, np.ndarray, int, int, float], np.random.get_state())
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    """Puts back what :func:`capture` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def split_for_rank(rank: int) -> None:
    """Gives each of several processes its own random stream, derived from the shared one.

    Lightning starts every rank of a fit with the same seed; then the dropout masks and augmentation
    draws of all ranks would repeat each other on different images. Deterministic: the same
    shared state gives each rank the same stream again.
    """
    seed = (int(torch.randint(0, 2**31 - 1, (1,)).item()) + 1_000_003 * rank) % (2**32)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def seed_streams(seed: int, position: int = 0) -> None:
    """Starts every random stream (torch, NumPy, Python, loader workers) from ``seed + position``.

    A stage's streams start from the seed plus its place in the plan, whatever ran before it: a run
    resumed at that stage draws what an uninterrupted one does (a checkpoint's saved state then takes over).
    """
    L.seed_everything(seed + position, workers=True, verbose=False)
