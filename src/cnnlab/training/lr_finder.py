"""The learning-rate finder: Lightning's range test (``Tuner.lr_find``) on a stage's own module and data.

The rate grows exponentially, one step per training batch, from ``START_LR`` to ``END_LR``
while the (smoothed) loss is recorded; the pick is Lightning's suggestion, the rate where that
loss falls fastest. Lightning saves the module before the test and restores it afterwards
(weights, BatchNorm statistics, optimiser), so training then starts from the same weights as
without the finder.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError
from cnnlab.figures import new_figure, save_figure
from cnnlab.io import atomic_write_json
from cnnlab.progress import in_notebook
from cnnlab.training.callbacks import ThreadWatchTicks
from cnnlab.training.trainer import quiet_lightning, resolve_precision

START_LR = 1e-6  # below any useful rate for Adam or SGD on these models
END_LR = 1.0  # Adam diverges well before; the test stops when the loss passes 4x its best
STEPS = 100  # Lightning's default: one rate per training batch
SKIP_BEGIN, SKIP_END = 10, 1  # rates left out of every rule, as Lightning's suggestion leaves them out
RULES = {
    "lightning": "Lightning's suggestion: the steepest fall of the smoothed loss per unit of rate",
    "steepest": "the steepest fall of the smoothed loss per step on the log-rate axis (the plot's slope)",
    "minimum": "a tenth of the rate at the lowest smoothed loss",
}

# Measured (bench/bench_lr_find.py): on digits every rule beat the default 1e-3; on dtd10's head a tenth of
# the minimum (0.076) lost 6.7 test points while Lightning's pick (0.00058) matched the default within an image.
DEFAULT_RULE = "lightning"


def rule_picks(lrs: list[float], losses: list[float]) -> dict[str, float]:
    """The rate each rule of :data:`RULES` picks from one curve (rules without finite points are left out)."""
    lr, loss = np.asarray(lrs, float)[SKIP_BEGIN:-SKIP_END], np.asarray(losses, float)[SKIP_BEGIN:-SKIP_END]
    keep = np.isfinite(loss)
    lr, loss = lr[keep], loss[keep]
    if len(lr) < 3:
        return {}
    return {
        "lightning": float(lr[np.argmin(np.gradient(loss, lr))]),
        "steepest": float(lr[np.argmin(np.gradient(loss, np.log(lr)))]),
        "minimum": float(lr[np.argmin(loss)] / 10),
    }


@dataclass
class LrFinding:
    """What the range test found: the pick, the rule behind it, and the curve it was read from."""

    lr: float
    rule: str
    stage: str  # the stage whose rate it is (frozen: the head on cached features; train: every layer)
    steps: int  # rates tried (fewer than asked when the loss diverged first)
    seconds: float
    start_lr: float
    end_lr: float
    picks: dict[str, float] = field(default_factory=dict)  # what every rule of RULES picks from the same curve
    lrs: list[float] = field(repr=False, default_factory=list)
    losses: list[float] = field(repr=False, default_factory=list)
    folder: Path | None = field(repr=False, default=None)  # where lr-find wrote its files

    def record(self) -> dict[str, Any]:
        """For run.json: everything but the curve (that is in the plot and lr_find.json)."""
        return {k: v for k, v in asdict(self).items() if k not in ("lrs", "losses", "folder")}

    def line(self) -> str:
        return (
            f"learning-rate finder ({self.stage} stage, {self.steps} rates from {self.start_lr:g} to "
            f"{self.end_lr:g}, {self.seconds:.1f} s): pick {self.lr:.3g}; rule: {self.rule}"
        )

    def save(self, curve: Path, figure: Path) -> None:
        """Writes the curve (JSON) and the plot: loss vs rate on a log axis, the pick marked."""
        atomic_write_json(curve, {k: v for k, v in asdict(self).items() if k != "folder"})
        plot_finding(self, figure)


def plot_finding(finding: LrFinding, out: Path) -> Path:
    fig = new_figure(7.5, 4.2)
    ax = fig.add_subplot()
    # The first rates are left out, as by the rules: Lightning's smoothing halves the first losses.
    lrs, losses = np.asarray(finding.lrs, float)[SKIP_BEGIN:], np.asarray(finding.losses, float)[SKIP_BEGIN:]
    ax.plot(lrs, losses, "-", color="#3a6ea5", label="smoothed training loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    finite = losses[np.isfinite(losses)]
    if len(finite) > 2:  # the divergence at the end dwarfs the curve: the axis ends at the first half's highest
        low, high = float(finite.min()), float(finite[: max(2, len(finite) // 2)].max())
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.15 * (high - low + 1e-9))
    at = int(np.argmin(np.abs(np.log(lrs) - math.log(finding.lr)))) if len(lrs) else None
    if at is not None:
        ax.axvline(finding.lr, color="#c0392b", linestyle="--", linewidth=1)
        ax.plot([finding.lr], [losses[at]], "o", color="#c0392b", markersize=8, label=f"pick {finding.lr:.3g}")
    ax.legend(loc="upper left")
    ax.grid(True, which="major", alpha=0.3)
    return save_figure(fig, out, f"Learning-rate finder ({finding.stage} stage): pick {finding.lr:.3g}")


@contextlib.contextmanager
def _bar_only_on_terminal() -> Iterator[None]:
    """Lightning's finder draws a tqdm bar: right on a terminal, lines of carriage returns in a log.

    Its callback builds the bar from its module's ``tqdm`` with no way to pass ``disable``, and tqdm
    reads its TQDM_* variables at import, so off a terminal that name is a disabled tqdm while the test runs.
    """
    from lightning.pytorch.tuner import lr_finder as lightning_finder

    if sys.stderr.isatty() or in_notebook():
        yield
        return
    finder: Any = lightning_finder  # its tqdm is an import of Lightning's module, not exported
    bar = finder.tqdm
    finder.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        finder.tqdm = bar


def _finder_trainer(cfg: TrainConfig, workdir: Path, steps: int) -> L.Trainer:
    """A bare Trainer for the range test: no checkpoints, logs, bar or validation (the test reads training loss)."""
    return L.Trainer(
        max_epochs=-1,
        max_steps=steps,  # the test's length; one-cycle and cosine schedules are sized by it (then replaced)
        accelerator=cfg.accelerator,
        devices=1,
        precision=resolve_precision(cfg),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=10**9,  # validation says nothing about the range test
        default_root_dir=str(workdir),  # where Lightning keeps the module's state during the test
        callbacks=[ThreadWatchTicks()],
    )


def find_lr(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: TrainConfig,
    stage: str,
    workdir: Path | None = None,
    steps: int = STEPS,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    rule: str = "",
) -> LrFinding:
    """Runs the range test on ``module`` with ``datamodule``'s training batches; the module comes back unchanged.

    Raises:
        CnnlabError: when the loss could not be read at enough rates (too few batches, or NaN).
    """
    from lightning.pytorch.tuner.tuning import Tuner

    rule = rule or DEFAULT_RULE

    if not 0 < start_lr < end_lr:
        raise CnnlabError(f"the finder's rates must grow: --start-lr {start_lr:g} must be below --end-lr {end_lr:g}")
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(dir=workdir, prefix=".lr-find-") as folder,
        quiet_lightning(),
        _bar_only_on_terminal(),
    ):
        trainer = _finder_trainer(cfg, Path(folder), steps)
        try:
            result = Tuner(trainer).lr_find(
                module, datamodule=datamodule, min_lr=start_lr, max_lr=end_lr, num_training=steps, update_attr=False
            )
        except SystemExit:  # Lightning's answer to Ctrl-C inside a fit: stop as a Ctrl-C anywhere else does
            if not trainer.interrupted:
                raise
            raise KeyboardInterrupt from None
    lrs = [float(x) for x in result.results["lr"]] if result is not None else []
    losses = [float(x) for x in result.results["loss"]] if result is not None else []
    picks = rule_picks(lrs, losses)
    if rule not in picks:
        raise CnnlabError(
            f"the learning-rate finder could not read the loss at enough rates ({len(lrs)} of {steps}); "
            "give --lr a number, or use more training images"
        )
    return LrFinding(
        picks[rule],
        RULES[rule],
        stage,
        len(lrs),
        round(time.perf_counter() - began, 2),
        start_lr,
        end_lr,
        picks,
        lrs,
        losses,
    )
