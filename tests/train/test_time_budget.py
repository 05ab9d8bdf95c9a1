"""--time-budget: the budget-shaped LR, the TimeBudget callback, and apply_speedups."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config import DataConfig, RunConfig, TrainConfig, merge_config
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import prepare_data
from cnnlab.models import create_model
from cnnlab.train.checkpoint import read_checkpoint
from cnnlab.train.module import ClassifierModule
from cnnlab.train.optim import apply_speedups, build_scheduler
from cnnlab.train.run_dir import new_run_dir
from cnnlab.train.time_budget import BudgetSchedule, TimeBudget, onecycle_factor
from cnnlab.train.trainer import build_trainer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_onecycle_shape() -> None:
    assert onecycle_factor(0.0) == pytest.approx(1 / 25)
    assert onecycle_factor(0.25) == pytest.approx(1.0)
    assert onecycle_factor(1.0) == pytest.approx(0.0, abs=1e-12)
    assert onecycle_factor(2.0) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at the bottom


def test_schedule_progress_is_steps_or_time_whichever_is_further() -> None:
    clock = FakeClock()
    schedule = BudgetSchedule("onecycle", seconds=10.0, total_steps=100, clock=clock)
    assert schedule.progress(50) == pytest.approx(0.5)  # no time spent: steps decide
    clock.now += 8.0
    assert schedule.progress(50) == pytest.approx(0.8)  # 8 of 10 s: time decides
    assert schedule(100) == pytest.approx(0.0, abs=1e-12)


def test_build_scheduler_uses_the_budget_only_for_per_step_schedules() -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    budgeted = build_scheduler(optimizer, TrainConfig(scheduler="onecycle", time_budget=5.0), 100)
    assert isinstance(budgeted["scheduler"].budget_schedule, BudgetSchedule)
    plateau = build_scheduler(optimizer, TrainConfig(scheduler="plateau", time_budget=5.0), 100)
    assert plateau["interval"] == "epoch"  # the lesson's plateau stays; the callback still stops


class Slow(nn.Module):
    """A model whose training steps take at least ``seconds``: a run of known length."""

    def __init__(self, inner: nn.Module, seconds: float) -> None:
        super().__init__()
        self.inner, self.seconds = inner, seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.seconds)
        return self.inner(x)


@pytest.fixture(scope="module")
def digits():
    return prepare_data(DataConfig(source="digits"), seed=0)


class EpochTimes(L.Callback):
    """Wall time of each training epoch, validation included."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.times.append(time.perf_counter() - self._start)


def budget_run(data, tmp_path: Path, budget: float, batch: int, step_s: float, epochs: int):
    """A budgeted run of a slowed-down simple_cnn; returns (training seconds, trainer, checkpoint, ...)."""
    cfg = TrainConfig(epochs=epochs, scheduler="onecycle", optimizer="sgd", lr=0.05, time_budget=budget,
                      patience=100)
    model = Slow(create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8)), step_s)
    module = ClassifierModule(model, 10, Normalize([0.0], [1.0]), cfg)
    files = new_run_dir(merge_config(RunConfig(), {"runs_dir": str(tmp_path), "name": "b"}))
    callback, epoch_times = TimeBudget(budget), EpochTimes()
    trainer, checkpoint = build_trainer(cfg, files, epochs, extra_callbacks=[callback, epoch_times])
    trainer.fit(module, datamodule=ImageDataModule(data, batch, seed=0))
    seconds = time.perf_counter() - callback.start  # the budget counts from the first batch
    return seconds, trainer, checkpoint, callback, epoch_times.times


def test_budget_stops_a_30s_run_in_time_and_keeps_the_best(digits, tmp_path: Path) -> None:
    epochs = int(30 / (-(-len(digits.splits["train"]) // 64) * 0.03)) + 1  # about 30 s unbudgeted
    seconds, trainer, checkpoint, callback, epoch_times = budget_run(digits, tmp_path, 3.0, 64, 0.03, epochs)
    assert callback.stopped_early and trainer.current_epoch < epochs - 1
    assert seconds < 3.0 + max(epoch_times) + 0.5  # within the budget plus one epoch's slack
    read_checkpoint(checkpoint.best_model_path)  # plain tensors and numbers: loads with weights_only
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.05 / 2  # the LR was annealing to the end


def test_budget_shorter_than_an_epoch_still_validates(digits, tmp_path: Path) -> None:
    seconds, trainer, checkpoint, callback, _ = budget_run(digits, tmp_path, 1.5, 8, 0.03, epochs=3)
    assert callback.stopped_early
    assert trainer.global_step < trainer.num_training_batches  # stopped inside epoch 1
    assert seconds < 1.5 + 1.0
    assert "val_loss" in trainer.callback_metrics  # validated before stopping
    assert Path(checkpoint.best_model_path).is_file()


def test_channels_last_same_outputs_and_keys() -> None:
    torch.manual_seed(0)
    plain = create_model("fast_cnn", num_classes=10, in_chans=1, image_size=(28, 28)).eval()
    fast = apply_speedups(copy.deepcopy(plain), TrainConfig(channels_last=True))
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(plain(x), fast(x), atol=1e-4)
    assert list(plain.state_dict()) == list(fast.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_compile_gives_the_same_loss() -> None:
    torch.manual_seed(0)
    plain = create_model("fast_cnn", num_classes=10, in_chans=1, image_size=(16, 16), dropout=0.0)
    compiled = copy.deepcopy(plain)
    apply_speedups(compiled, TrainConfig(compile=True))
    if getattr(compiled, "_compiled_call_impl", None) is None:
        pytest.skip("torch.compile is not available in this environment")
    x, y = torch.rand(8, 1, 16, 16), torch.randint(0, 10, (8,))
    try:
        compiled_loss = F.cross_entropy(compiled(x), y)
    except Exception as exc:  # noqa: BLE001  a compiler problem on this machine is a skip, not a failure
        pytest.skip(f"torch.compile failed here: {str(exc).splitlines()[0]}")
    assert list(plain.state_dict()) == list(compiled.state_dict())  # checkpoints stay loadable
    assert compiled_loss.item() == pytest.approx(F.cross_entropy(plain(x), y).item(), abs=1e-4)
