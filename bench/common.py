"""Shared helpers for the training benchmarks: data, machine facts, and one cnnlab training run.

A run here is cnnlab's real training path (model factory, ``apply_speedups``, ClassifierModule,
ImageDataModule, ``build_trainer``'s Lightning Trainer and callbacks); what it adds is a
``TestProbe`` callback that scores the test split now and then, off the clock.
"""

from __future__ import annotations

import sys

import statistics
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from cnnlab.augment.batch import alternating_flip, build_batch_augment
from cnnlab.config import RunConfig, build_config, merge_config
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import prepare_data
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.machine import machine_line
from cnnlab.models import model_input
from cnnlab.training.build import build_model, preprocess_of
from cnnlab.training.checkpoint import load_module_weights
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups
from cnnlab.training.run_dir import new_run_dir
from cnnlab.training.time_budget import TimeBudget
from cnnlab.training.trainer import build_trainer, quiet_lightning

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
DATASETS = Path.home() / ".cache" / "cnnlab" / "datasets"
SHARED = HERE.parent.parent / "shared" / "data"


CNNLAB_TRAIN = (sys.executable, "-m", "cnnlab", "train")  # a whole `cnnlab train` process, as a user runs it


def dataset(name: str) -> Path:
    """``~/.cache/cnnlab/datasets/<name>``, unpacked from ../shared/data on first use."""
    root = DATASETS / name
    if not (root / "train").is_dir():
        DATASETS.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / f"{name}.tar.gz") as tar:
            tar.extractall(DATASETS, filter="data")
    return root


def machine() -> str:
    """One line: CPU, cores, torch threads and version, load average now."""
    return machine_line() + " (shared machine)"


def write_page(name: str, title: str, command: str, intro: str, body: list[str], measured_on: str | None = None) -> str:
    """Writes bench/out/<name>.md (title, command, machine line, intro, body) and prints it.

    ``measured_on``: the machine line of the runs shown, when the page is re-rendered elsewhere.
    """
    on = measured_on or machine()
    text = "\n".join([f"# {title}", "", f"Command: `{command}`  ", f"Machine: {on}  ", "", intro, "", *body, ""])
    OUT.mkdir(exist_ok=True)
    (OUT / f"{name}.md").write_text(text)
    print("\n" + text)
    return text


def recipe_config(recipe: str, source: Path, seed: int, updates: dict[str, Any] | None = None) -> RunConfig:
    """Defaults -> recipe -> ``updates``, as ``cnnlab train DATA --recipe NAME`` with flags does."""
    config = build_config(recipe=recipe, data=str(source), seed=seed)
    return merge_config(config, updates or {}, where="the benchmark")


def load_data(config: RunConfig) -> PreparedData:
    """Decodes and splits once; every seed then trains on the same split (the seed varies training)."""
    return prepare_data(config.data, config.train.seed, model_input(config.model.name, config.model.pretrained))


@torch.no_grad()
def accuracy(model: torch.nn.Module, normalize: Normalize, images: ImageSet, batch: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode, fp32) on an in-memory split."""
    was_training = model.training
    model.eval()
    correct = 0
    for x, y in zip(images.images.split(batch), images.labels.split(batch)):
        correct += int((model(normalize(Normalize.to_unit(x))).argmax(1) == y).sum())
    model.train(was_training)
    return correct / len(images)


class TestProbe(L.Callback):
    """Scores the test split every ``every`` training batches and at each epoch end, off the clock.

    ``points`` holds (training seconds, CPU seconds, epochs done, test accuracy). Training seconds
    are wall time since the first batch minus the probes' own time (validation and checkpoints
    count); CPU seconds are this process's CPU time over the same span, which other processes
    on a shared machine disturb much less than wall time.
    """

    def __init__(self, test: ImageSet, normalize: Normalize, every: int, stop_at: float | None = None) -> None:
        self.test, self.normalize, self.every, self.stop_at = test, normalize, max(every, 1), stop_at
        self.points: list[tuple[float, float, float, float]] = []
        self.start = self.cpu_start = self.excluded = self.cpu_excluded = 0.0

    def train_seconds(self) -> float:
        return time.perf_counter() - self.start - self.excluded

    def cpu_seconds(self) -> float:
        return time.process_time() - self.cpu_start - self.cpu_excluded

    def _probe(self, trainer: L.Trainer, pl_module: L.LightningModule, epochs: float) -> None:
        seconds, cpu = self.train_seconds(), self.cpu_seconds()
        began, cpu_began = time.perf_counter(), time.process_time()
        acc = accuracy(pl_module.model, self.normalize, self.test)
        self.points.append((seconds, cpu, epochs, acc))
        if self.stop_at is not None and acc >= self.stop_at:
            trainer.should_stop = True  # e.g. the capped lesson run: its goal is reached
        self.excluded += time.perf_counter() - began
        self.cpu_excluded += time.process_time() - cpu_began

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (batch_idx + 1) % self.every == 0 and batch_idx + 1 < trainer.num_training_batches:
            self._probe(trainer, pl_module, trainer.current_epoch + (batch_idx + 1) / trainer.num_training_batches)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._probe(trainer, pl_module, float(trainer.current_epoch + 1))

    def first_reaching(self, target: float) -> tuple[float, float, float] | None:
        """(training seconds, CPU seconds, epochs) when test accuracy first reached ``target``, or None."""
        return next(((s, c, e) for s, c, e, a in self.points if a >= target), None)


@dataclass
class RunResult:
    """What one benchmark run measured."""

    train_seconds: float
    epochs: float
    final_acc: float  # best checkpoint (lowest val_loss), as cnnlab evaluates it
    probe: TestProbe | None = None
    budget: TimeBudget | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    model: torch.nn.Module | None = None  # the trained network (best checkpoint), in eval mode


def train_once(
    config: RunConfig,
    data: PreparedData,
    probes_per_epoch: int = 0,
    stop_at: float | None = None,
    workdir: Path | None = None,
    model: torch.nn.Module | None = None,
    callbacks: list[L.Callback] | None = None,
) -> RunResult:
    """Trains ``config`` on ``data`` the way ``cnnlab train`` does; scores the best checkpoint on test.

    ``model`` replaces the config's network (a variant under study); ``callbacks`` join the Trainer's.
    """
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    preprocess = preprocess_of(data, config)
    model = apply_speedups(model or build_model(config, data.num_classes, preprocess), config.train)
    normalize = Normalize(preprocess.mean, preprocess.std)
    module = ClassifierModule(
        model,
        data.num_classes,
        normalize,
        config.train,
        augment=build_batch_augment(config.augment, loader_flips=config.augment.flip_mode == "alternate"),
        label_smoothing=config.augment.label_smoothing,
    )
    flips = alternating_flip(config.augment, config.train.seed)
    datamodule = ImageDataModule(data, config.data.batch_size, config.train.seed, train_by_position=flips)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        files = new_run_dir(merge_config(config, {"runs_dir": tmp, "name": "bench"}))
        callbacks = list(callbacks or [])
        probe = None
        if probes_per_epoch:
            batches = -(-len(data.splits["train"]) // config.data.batch_size)
            probe = TestProbe(data.splits["test"], normalize, -(-batches // probes_per_epoch), stop_at)
            callbacks.append(probe)
        budget = TimeBudget(config.train.time_budget) if config.train.time_budget else None
        if budget is not None:
            callbacks.append(budget)
        with quiet_lightning():
            trainer, checkpoint = build_trainer(
                config.train, files, config.train.epochs, "train", extra_callbacks=callbacks
            )
            started = time.perf_counter()
            trainer.fit(module, datamodule=datamodule)
        finished = time.perf_counter()
        wall = finished - started
        load_module_weights(module, checkpoint.best_model_path or str(files.last))
    if probe is not None:
        seconds = probe.train_seconds()
    elif budget is not None and budget.start is not None:
        seconds = finished - budget.start  # the budget's own clock: from the first batch
    else:
        seconds = wall
    batches = -(-len(data.splits["train"]) // config.data.batch_size)
    epochs = trainer.global_step / batches  # fractional: a budget can end mid-epoch
    images = min(trainer.global_step * config.data.batch_size, epochs * len(data.splits["train"]))
    return RunResult(
        seconds,
        epochs,
        accuracy(module.model, normalize, data.splits["test"]),
        probe,
        budget,
        {"wall_seconds": wall, "images_per_s": images / max(seconds, 1e-9), "normalize": normalize},
        module.model.eval(),
    )


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """'median (min-max)' of the values, or 'not reached' for an empty list."""
    if not values:
        return "not reached"
    text = fmt.format(statistics.median(values))
    return text + (f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else "")


SPEED_VARIANTS: dict[str, dict[str, Any]] = {
    "fp32, NCHW (default)": {},
    "channels_last": {"channels_last": True},
    "bf16-mixed": {"bf16": True},
    "channels_last + bf16-mixed": {"channels_last": True, "bf16": True},
    "channels_last + bf16 + compile": {"channels_last": True, "bf16": True, "compile": True},
    "channels_last + bf16, 1 thread": {"channels_last": True, "bf16": True, "threads": 1},
}


def speed_table(
    model_name: str,
    in_chans: int,
    side: int,
    batch: int,
    rounds: int = 5,
    variants: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Markdown rows: training-step time per image (forward, backward, SGD step) for each speed-up.

    All variants are built first, then timed round-robin (5 steps each per round), so a change in
    the machine's load hits them alike; the table gives median and min-max over rounds.
    """
    import torch.nn.functional as F

    from cnnlab.config import TrainConfig
    from cnnlab.models import create_model

    variants = variants or SPEED_VARIANTS
    default_threads = torch.get_num_threads()
    steps: dict[str, Any] = {}
    steps_x: dict[str, torch.Tensor] = {}
    for label, v in variants.items():
        torch.manual_seed(0)
        model = (
            v["model"]()
            if "model" in v  # a variant's own network (a factory)
            else create_model(model_name, num_classes=10, in_chans=in_chans, image_size=(side, side), dropout=0.0)
        )
        model = apply_speedups(
            model, TrainConfig(channels_last=v.get("channels_last", False), compile=v.get("compile", False))
        )
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        size = v.get("batch", batch)
        x, y = torch.rand(size, in_chans, side, side), torch.randint(0, 10, (size,))

        def step(model=model, optimizer=optimizer, x=x, y=y, v=v) -> None:
            torch.set_num_threads(v.get("threads", default_threads))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=v.get("bf16", False)):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        began = time.perf_counter()
        step(), step()  # warm-up (and compilation)
        steps[label] = (step, time.perf_counter() - began)
        steps_x[label] = x
    times: dict[str, list[float]] = {label: [] for label in steps}
    for _ in range(rounds):
        for label, (step, _) in steps.items():
            began = time.perf_counter()
            for _ in range(5):
                step()
            times[label].append((time.perf_counter() - began) / 5 / len(steps_x[label]) * 1e6)
    torch.set_num_threads(default_threads)
    base = statistics.median(next(iter(times.values())))
    lines = ["| variant | us per image (median, min-max) | time vs default | warm-up (s) |", "|---|---|---|---|"]
    for label, values in times.items():
        lines.append(
            f"| {label} | {spread(values, '{:.0f}')} | {statistics.median(values) / base:.2f}x | "
            f"{steps[label][1]:.1f} |"
        )
    return lines
