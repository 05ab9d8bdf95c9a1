"""Small Lightning callbacks of cnnlab's own."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import lightning as L

from cnnlab.threads import new_phase, tick


class EpochLines(L.Callback):
    """Plain epoch lines, as many as are worth reading: every slow epoch, not 50 quick ones.

    An epoch gets its line when it took ``slow_s`` or more, when ``every_s`` have passed since the
    last line (a heartbeat in logs), and for the first and last epoch of the stage's attempt; the
    last line says how many quick epochs were not shown. ``every_epoch`` (``--verbose``) prints
    them all. Lines also suit a terminal beside a live bar, and logs and pipes, where a bar
    would be garbage.

    Epoch-level train metrics are final only after the epoch's hooks have run, so each line is
    printed when the next epoch starts (or training ends).
    """

    KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
    SLOW_S = 2.0  # an epoch this long is worth a line of its own
    EVERY_S = 30.0  # and a run of quick ones shows one line this often

    def __init__(
        self,
        stage: str = "",
        every_epoch: bool = False,
        slow_s: float | None = None,
        every_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.stage = f"{stage} " if stage else ""
        self.every_epoch, self.clock = every_epoch, clock
        self.slow_s = self.SLOW_S if slow_s is None else slow_s
        self.every_s = self.EVERY_S if every_s is None else every_s
        self._pending: tuple[int, float] | None = None
        self._started = 0.0
        self._last_line: float | None = None  # when the last line was printed (None: none yet)
        self.hidden = 0  # quick epochs not shown since the last line

    def _wanted(self, seconds: float, last: bool) -> bool:
        if self.every_epoch or last or self._last_line is None or seconds >= self.slow_s:
            return True
        return self.clock() - self._last_line >= self.every_s

    def _flush(self, trainer: L.Trainer, last: bool = False) -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        if not self._wanted(seconds, last):
            self.hidden += 1
            return
        metrics = trainer.callback_metrics
        parts = [f"{key} {float(metrics[key]):.4g}" for key in self.KEYS if key in metrics]
        hidden = f"; {self.hidden} quicker epoch{'s' if self.hidden > 1 else ''} not shown" if self.hidden else ""
        print(
            f"{self.stage}epoch {epoch + 1}/{trainer.max_epochs}  " + "  ".join(parts) + f"  ({seconds:.1f}s{hidden})",
            flush=True,
        )
        self._last_line, self.hidden = self.clock(), 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer)
        self._started = self.clock()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending = (trainer.current_epoch, self.clock() - self._started)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._flush(trainer, last=True)


class SyncedStop(L.Callback):
    """Ctrl-C with several processes: each rank only notes it; all stop together, at the same step.

    A rank stopping alone would leave the others waiting in a collective. So at each training step
    the ranks start agreeing (without waiting) whether any saw Ctrl-C, and read the answer at the
    next step: all raise KeyboardInterrupt at that same point (a step later than a lone process
    would), which Lightning turns into its graceful shutdown on each; the last check is at the end
    of training. A second Ctrl-C, later than a launcher's forwarded copy of the first (torchrun
    sends one), stops this process at once.

    Args:
        ranks: a ``cnnlab.training.ranks.Ranks`` (its ``any_later`` is the agreement).
    """

    REPEAT_S = 3.0

    def __init__(self, ranks: Any) -> None:
        self.ranks = ranks
        self.pressed_at: float | None = None
        self._previous: Any = None
        self._answer: Any = None  # the agreement started at the last step

    def _on_ctrl_c(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.pressed_at is not None and now - self.pressed_at > self.REPEAT_S:
            raise KeyboardInterrupt
        self.pressed_at = self.pressed_at or now

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_ctrl_c)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _agreed(self) -> bool:
        answer, self._answer = self._answer, None
        return answer is not None and answer()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._agreed():
            raise KeyboardInterrupt
        self._answer = self.ranks.any_later(self.pressed_at is not None)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._agreed()  # the last step's agreement: the side channel must hold no pending exchange
        if self.ranks.any(self.pressed_at is not None):
            raise KeyboardInterrupt


class CheapValidationTTA(L.Callback):
    """While fitting, validate with the network's cheaper test-time augmentation, if it has one.

    A network with ``tta`` and ``fit_tta`` attributes (``fast_cifar``: six views at test, two
    while fitting) validates every epoch with ``fit_tta``: choosing the best epoch needs no more,
    and on a CPU the six views of 5,000 images cost several seconds per epoch of the budget.
    The test evaluation, after fitting, gets the full ``tta``.
    """

    def __init__(self) -> None:
        self._saved: str | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        net: Any = getattr(pl_module, "model", None)
        if hasattr(net, "tta") and hasattr(net, "fit_tta"):
            self._saved, net.tta = net.tta, net.fit_tta

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved is not None:
            net: Any = pl_module.model
            net.tta, self._saved = self._saved, None


class ThreadWatchTicks(L.Callback):
    """Reports each training batch to the thread watch (``cnnlab.threads``), which moves the count
    with the machine's load: another process starting mid-run no longer makes epochs 4-10x slower."""

    def __init__(self) -> None:
        self._began = 0.0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        new_phase()  # a stage's batches are not the previous phase's: compare throughput within it

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._began = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        images = batch[0] if isinstance(batch, (list, tuple)) and batch else batch
        tick(int(getattr(images, "shape", [1])[0]), time.perf_counter() - self._began)
