"""Training inside a wall-clock budget: a learning-rate shape that ends when the time does, and a
callback that stops early enough for the final validation (and its best checkpoint) to fit.

``--time-budget SECONDS`` is the whole run's training time: every stage, a frozen stage's feature
extraction, validation, checkpoints and any ``torch.compile`` warm-up, summed over resumes (data
loading, model building and the final evaluation are not counted). It is split between stages
(below: stage 1 at most a share, stage 2 the rest); within a stage the callback keeps to the
stage's share. Where the budget
ends depends on how fast this machine is right now, so budgeted runs are not repeatable step
for step, even with ``--seed``.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

# The split between a run's stages, across resumes: a frozen stage followed by fine-tuning may use up to
# :data:`FROZEN_SHARE` of it: on cached features it usually needs far less, and what it leaves
# goes to fine-tuning, which gets the rest of the budget. A single stage gets it all. A resumed
# run gets what is left: the seconds each stage spent are kept in run.json and, for the stage
# that was interrupted, in its checkpoint.

# Stage 1 on cached features is one pass of the backbone plus epochs of milliseconds; a third of
# the budget covers that pass for folders a budgeted run can fine-tune at all, and whatever it
# does not use goes to stage 2.
FROZEN_SHARE = 0.35
# Below this, a stage cannot do one batch and one validation worth having: it is skipped.
MIN_STAGE_SECONDS = 1.0


@dataclass(frozen=True)
class StageBudget:
    """One stage's share of the run's budget."""

    seconds: float  # what this stage may use in all, including what it used before a resume
    used_before: float  # seconds this stage spent in earlier attempts (from its checkpoint)

    @property
    def left(self) -> float:
        return self.seconds - self.used_before


def stage_budget(total: float, stages_left: int, used_by_finished: float, used_by_this: float) -> StageBudget:
    """The share of the stage about to run (or resume).

    Args:
        total: the run's budget in seconds.
        stages_left: stages still to run, this one included.
        used_by_finished: seconds the finished stages used.
        used_by_this: seconds this stage used in earlier attempts.
    """
    remaining = max(total - used_by_finished, 0.0)
    share = remaining if stages_left == 1 else min(remaining, FROZEN_SHARE * total)
    return StageBudget(share, used_by_this)


def split_line(total: float, stage_names: list[str]) -> str:
    """The line printed at the start of a budgeted run: how its budget is split."""
    if len(stage_names) == 1:
        return f"time budget {total:g} s: all of it for stage '{stage_names[0]}'"
    first = FROZEN_SHARE * total
    return (
        f"time budget {total:g} s: stage '{stage_names[0]}' (feature extraction included) up to "
        f"{first:.0f} s, stage '{stage_names[1]}' the rest (at least {total - first:.0f} s)"
    )


Clock = Callable[[], float]

WARMUP = 0.25  # fraction of the run spent warming up, as the step-based onecycle (pct_start)
START_DIV = 25.0  # warm-up starts at lr / 25, OneCycleLR's div_factor
SAFETY = 1.2  # estimates of what is left are scaled up: a shared machine can slow down mid-run


def onecycle_factor(progress: float) -> float:
    """LR multiplier at ``progress`` in [0, 1]: linear warm-up, then cosine down to 0."""
    p = min(max(progress, 0.0), 1.0)
    if p < WARMUP:
        return 1 / START_DIV + (1 - 1 / START_DIV) * p / WARMUP
    return 0.5 * (1 + math.cos(math.pi * (p - WARMUP) / (1 - WARMUP)))


def cosine_factor(progress: float) -> float:
    """LR multiplier at ``progress`` in [0, 1]: cosine from 1 to 0."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


# airbench94's shape: linear from 0.2x up to the peak over 23% of the run, then linear down to 0.07x.
LINEAR_PEAK, LINEAR_START, LINEAR_END = 0.23, 0.2, 0.07


def linear_factor(progress: float) -> float:
    """LR multiplier at ``progress`` in [0, 1]: linear warm-up, then linear decay (airbench94's)."""
    p = min(max(progress, 0.0), 1.0)
    if p < LINEAR_PEAK:
        return LINEAR_START + (1 - LINEAR_START) * p / LINEAR_PEAK
    return 1 - (1 - LINEAR_END) * (p - LINEAR_PEAK) / (1 - LINEAR_PEAK)


SHAPES: dict[str, Callable[[float], float]] = {
    "onecycle": onecycle_factor,
    "cosine": cosine_factor,
    "linear": linear_factor,
}


class BudgetSchedule:
    """``LambdaLR`` factor whose progress is the larger of steps done and budget used.

    Whichever ends first (the epochs or the time) ends the schedule at its low point. Until a
    :class:`TimeBudget` callback attaches itself (``clock``), time runs from construction.
    """

    def __init__(self, shape: str, seconds: float, total_steps: int, clock: Clock = time.perf_counter) -> None:
        self.shape = SHAPES[shape]
        self.seconds, self.total_steps = seconds, max(total_steps, 1)
        self._clock, self._start = clock, clock()
        self.budget: TimeBudget | None = None

    def progress(self, step: int) -> float:
        """Fraction of the run done at optimizer step ``step``."""
        used = self.budget.progress() if self.budget is not None else (self._clock() - self._start) / self.seconds
        return max(step / self.total_steps, used)

    def __call__(self, step: int) -> float:
        return self.shape(self.progress(step))


class BudgetLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR over a :class:`BudgetSchedule` whose state holds plain numbers only.

    LambdaLR would save a callable object's ``__dict__`` (functions, the clock, the callback)
    in the checkpoint, which cnnlab's ``weights_only`` loading rightly refuses; the schedule is
    rebuilt from the config instead, and the step count (``last_epoch``) is what is saved.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: BudgetSchedule) -> None:
        self.budget_schedule = schedule  # found by TimeBudget, which then lends it its clock
        super().__init__(optimizer, schedule)

    def state_dict(self) -> dict[str, Any]:
        state = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas", "budget_schedule")}
        state["lr_lambdas"] = [None] * len(self.lr_lambdas)
        return state


def budget_scheduler(optimizer: torch.optim.Optimizer, shape: str, seconds: float, total_steps: int) -> BudgetLR:
    """A per-step LR schedule following ``shape`` (one of :data:`SHAPES`) over the time budget."""
    return BudgetLR(optimizer, BudgetSchedule(shape, seconds, total_steps))


class TimeBudget(L.Callback):
    """Stops training so that it ends, final validation and checkpoint included, within ``seconds``.

    After every training batch it asks: if training went on, would the next batch plus the
    validation that must follow still fit? If not, it sets ``trainer.should_stop``; Lightning
    then validates at once (mid-epoch if need be), ModelCheckpoint keeps the best weights, and
    training ends. A validation never measured yet is estimated from the training speed.

    Args:
        seconds: the budget (a stage's share), wall time.
        clock: seconds as a float (tests pass a fake one).
        start: clock time the budget counts from (e.g. before a frozen stage extracts its
            features); None: the first training batch.
        already: seconds spent before ``start`` (by an earlier attempt of a resumed stage).
    """

    def __init__(
        self, seconds: float, clock: Clock = time.perf_counter, start: float | None = None, already: float = 0.0
    ) -> None:
        if not seconds > 0:
            raise ValueError(f"time budget must be > 0 seconds, got {seconds}")
        self.seconds, self._clock = float(seconds), clock
        self.start, self.already = start, already
        self.stopped_early = False
        self._batch_start = 0.0
        # Median of recent batches: one batch slowed by another process must not end the run.
        self._batches: deque[float] = deque(maxlen=25)
        self._image_s: float | None = None  # seconds per training image
        self._val_s: float | None = None  # latest validation, checkpoint saving included
        self._val_start: float | None = None
        self._val_images = 0
        self._shared: tuple[float, float] | None = None  # rank 0's (elapsed, reserve) after the last batch

    # --- estimates -------------------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds of the budget used (0 before training starts)."""
        return 0.0 if self.start is None else self.already + self._clock() - self.start

    def validation_estimate(self) -> float:
        """Seconds one validation (with checkpointing) is expected to take."""
        if self._val_s is not None:
            return self._val_s
        if self._image_s is None:
            return 0.0
        # Forward only, no augmentation, big batches: about a third of a training image's cost.
        return self._val_images * self._image_s / 3

    def batch_estimate(self) -> float:
        """Seconds one training batch is expected to take (median of the recent ones)."""
        return statistics.median(self._batches) if self._batches else 0.0

    def reserve(self, last_in_epoch: bool = False) -> float:
        """Seconds to keep back now: the next batch and the final validation (two at an epoch end)."""
        validations = 2 if last_in_epoch else 1
        return SAFETY * (self.batch_estimate() + validations * self.validation_estimate())

    def progress(self) -> float:
        """Fraction of the usable budget spent; 1.0 is about where training stops."""
        elapsed, reserve = self._shared if self._shared is not None else (self.elapsed(), self.reserve())
        usable = max(self.seconds - reserve, 1e-9)
        return min(elapsed / usable, 1.0)

    # --- Lightning hooks ---------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.start is None:
            self.start = self._clock()
        self.stopped_early = False
        self._shared = None
        for config in trainer.lr_scheduler_configs:  # let a budget-shaped LR share this clock
            schedule = getattr(config.scheduler, "budget_schedule", None)
            if isinstance(schedule, BudgetSchedule):
                schedule.budget = self
        self._val_images = _validation_size(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        now = self._clock()
        if self._val_start is not None:  # a validation (and its checkpoint saving) just ended
            self._record_validation(now - self._val_start)
        self._batch_start = now

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._batches.append(self._clock() - self._batch_start)
        images = _batch_size(batch)
        if images:
            self._image_s = self.batch_estimate() / images
        last = batch_idx + 1 >= trainer.num_training_batches
        reading: tuple[float, ...] = (self.elapsed(), self.reserve(last), self.reserve())
        if trainer.world_size > 1:  # rank 0's clock for all: every rank steps the same LR and stops together
            reading = tuple(trainer.strategy.broadcast(reading))
        elapsed, reserve_now, reserve_later = reading
        self._shared = (elapsed, reserve_later)
        if elapsed + reserve_now >= self.seconds:
            trainer.should_stop = True
            self.stopped_early = True

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_start = self._clock()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_start is not None:
            self._record_validation(self._clock() - self._val_start)

    def _record_validation(self, seconds: float) -> None:
        self._val_s = seconds
        self._val_start = None


def _batch_size(batch: Any) -> int:
    """Images in a (images, labels) batch, 0 when the shape is unknown."""
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return int(batch[0].shape[0])
    return 0


def _validation_size(trainer: L.Trainer) -> int:
    """Images in the validation set (0 if unknown); Lightning builds its loaders only when first used."""
    loaders = trainer.val_dataloaders
    datamodule = getattr(trainer, "datamodule", None)  # set by Lightning's data connector, not declared
    if loaders is None and datamodule is not None:
        try:
            loaders = datamodule.val_dataloader()
        except Exception:  # noqa: BLE001  no val loader, or one that cannot be built yet: estimate 0
            return 0
    loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders] if loaders is not None else []
    total = 0
    for loader in loaders:
        with contextlib.suppress(AttributeError, TypeError):
            total += len(loader.dataset)
    return total
