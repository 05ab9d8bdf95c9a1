"""Optimiser, learning-rate schedule and CPU/GPU speed-ups from the config (used by training)."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.config import TrainConfig
from cnnlab.threads import set_up
from cnnlab.training.time_budget import SHAPES, budget_scheduler, linear_factor

log = logging.getLogger("cnnlab")


def build_optimizer(params: Iterable[Any], cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """Adam (the lesson's), AdamW or SGD with Nesterov momentum, over ``params`` (or groups),
    inside timm's Lookahead with ``cfg.lookahead`` > 0.

    ``foreach``: one call per operation for all the tensors rather than a loop over them, which
    torch does by default on GPUs only. On a CPU it gives the same weights bit for bit and saves
    Python time per step, which counts for small networks: SGD's step on fast_cnn_small's 14
    tensors 1.3-1.6 ms -> 0.9-1.1 ms, Adam and AdamW about 15% (one thread, shared 2-core EPYC).
    """
    optimizer: torch.optim.Optimizer
    if cfg.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            params, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay, foreach=True
        )
    elif cfg.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay, foreach=True)
    else:
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay, foreach=True)
    if cfg.lookahead:
        # Imported here: timm's import costs seconds that a run without Lookahead (or timm models) skips.
        # Its slow weights live in the wrapped optimiser's state, so checkpoints and resumes keep them.
        from timm.optim import Lookahead

        optimizer = Lookahead(optimizer, alpha=cfg.lookahead_alpha, k=cfg.lookahead)  # type: ignore[no-untyped-call]
    return optimizer


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> dict[str, Any] | None:
    """The Lightning ``lr_scheduler`` dict for ``cfg.scheduler``, or None for a constant LR.

    ``plateau`` steps once per epoch on val_loss (the lesson's ReduceLROnPlateau); ``onecycle``,
    ``cosine`` and ``linear`` step every batch over ``total_steps``, or, with ``cfg.time_budget``, over
    whichever ends first: the steps or the time (see ``cnnlab.training.time_budget``).
    """
    scheduler: torch.optim.lr_scheduler.LRScheduler
    if cfg.time_budget and cfg.scheduler in SHAPES:
        scheduler = budget_scheduler(optimizer, cfg.scheduler, float(cfg.time_budget), total_steps)
        return {"scheduler": scheduler, "interval": "step"}
    if cfg.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        return {"scheduler": scheduler, "monitor": "val_loss", "interval": "epoch"}
    if cfg.scheduler == "onecycle" and total_steps >= 4:
        # A quarter of the steps warm up; at least 2, so torch's phases never have length 0 (a
        # one-epoch stage of a few batches: ZeroDivisionError). Fewer than 4 steps: cosine below.
        pct_start = min(max(0.25, 2 / total_steps), (total_steps - 2) / total_steps)
        max_lrs = [group["lr"] for group in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lrs, total_steps=total_steps, pct_start=pct_start
        )
        return {"scheduler": scheduler, "interval": "step"}
    if cfg.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=cfg.min_lr)
        return {"scheduler": scheduler, "interval": "step"}
    if cfg.scheduler == "linear":
        steps = max(total_steps, 1)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: linear_factor(step / steps))
        return {"scheduler": scheduler, "interval": "step"}
    if cfg.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1), eta_min=cfg.min_lr)
        return {"scheduler": scheduler, "interval": "step"}
    return None


def _to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: 4-D inputs in NHWC memory order (same values, same shape)."""
    return tuple(
        a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.ndim == 4 else a
        for a in args
    )


def compile_model(model: nn.Module) -> bool:
    """``torch.compile`` in place (state-dict keys unchanged); False and a warning if unavailable.

    Compiling happens at the first forward pass, so train inside :func:`compile_fallback`.
    """
    try:
        model.compile()  # nn.Module.compile: unlike torch.compile(model), no "_orig_mod." prefix
        return True
    except Exception as exc:  # noqa: BLE001  any failure here only means "no compile"
        log.warning("torch.compile is not available here (%s); training without it", str(exc).splitlines()[0])
        return False


@contextlib.contextmanager
def compile_fallback(enabled: bool) -> Iterator[None]:
    """While inside, a graph that fails to compile runs eagerly (dynamo's ``suppress_errors``), so a
    missing C++ compiler costs speed, never the run; the setting is restored afterwards."""
    if not enabled:
        yield
        return
    import torch._dynamo

    with torch._dynamo.config.patch(suppress_errors=True):
        yield


@functools.lru_cache(maxsize=1)
def bf16_is_fast() -> bool:
    """Whether bf16 autocast runs natively here: a CUDA GPU with bf16, or a CPU with AVX512-BF16/AMX.

    Elsewhere CPU bf16 is emulated and slower than fp32, so recipes fall back to full precision.
    """
    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def apply_threads(cfg: TrainConfig, processes: int = 1) -> str:
    """Sets torch's CPU threads for the run by cnnlab's one policy (``cnnlab.threads``); returns why, for run.json.

    A deterministic run keeps torch's current count: one chosen by the machine's load would change
    the float sums, so the same command would not give the same numbers twice.
    """
    return set_up(cfg.threads, processes, keep_current=cfg.deterministic).why


def apply_speedups(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Applies ``cfg.channels_last`` and ``cfg.compile`` to ``model`` (in place) and returns it.

    Neither changes what is computed, only how (float rounding aside), nor the state-dict keys, so
    checkpoints load into a plain model. Measured on a 2-core AMD EPYC (Zen 4), see BENCHMARKS.md:
    channels_last makes conv nets' training steps 1.3-2x faster (1.5x for Lite0 fine-tuning), so
    it is on by default; torch.compile makes them slower or no faster (and costs 12-55 s of
    compiling), so it is off by default and in every recipe.
    """
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
        model.register_forward_pre_hook(_to_channels_last)  # the input too: no layout reorder per conv
    if cfg.compile:
        compile_model(model)
    return model
