"""--time-budget: the budget-shaped LR, the TimeBudget callback, the split between stages, resumes.

Time here is a fake clock that only moves when a training or validation batch "takes" its
seconds, so every assertion is exact and holds however loaded the machine is.
"""

from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from cnnlab.config import DataConfig, RunConfig, TrainConfig, build_config, merge_config
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import prepare_data
from cnnlab.models import create_model
from cnnlab.training import run_fit as fit_module, stage_data, stage_fit
from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.module import ClassifierModule
from cnnlab.training.optim import apply_speedups, build_scheduler
from cnnlab.training.run_dir import new_run_dir, open_run, read_record
from cnnlab.training.time_budget import FROZEN_SHARE, BudgetSchedule, TimeBudget, onecycle_factor
from cnnlab.training.trainer import build_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Ticker(L.Callback):
    """Makes each training batch take ``step`` fake seconds and each validation batch ``val``."""

    def __init__(self, clock: FakeClock, step: float, val: float) -> None:
        self.clock, self.step, self.val = clock, step, val

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.clock.now += self.step  # after TimeBudget noted the batch's start: it measures this

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.clock.now += self.val


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


@pytest.fixture(scope="module")
def digits():
    return prepare_data(DataConfig(source="digits"), seed=0)


def budget_run(data, tmp_path: Path, budget: float, batch: int, epochs: int, step: float = 0.03):
    """A budgeted run on a fake clock; returns (fake seconds used, trainer, checkpoint, callback)."""
    clock = FakeClock()
    cfg = TrainConfig(epochs=epochs, scheduler="onecycle", optimizer="sgd", lr=0.05, time_budget=budget, patience=100)
    model = create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8))
    module = ClassifierModule(model, 10, Normalize([0.0], [1.0]), cfg)
    files = new_run_dir(merge_config(RunConfig(), {"runs_dir": str(tmp_path), "name": "b"}))
    callback = TimeBudget(budget, clock=clock)
    trainer, checkpoint = build_trainer(
        cfg, files, epochs, "train", extra_callbacks=[callback, Ticker(clock, step, step / 3)]
    )
    trainer.fit(module, datamodule=ImageDataModule(data, batch, seed=0))
    return clock.now - callback.start, trainer, checkpoint, callback


def test_budget_stops_a_30s_run_in_time_and_keeps_the_best(digits, tmp_path: Path) -> None:
    epochs = int(30 / (-(-len(digits.splits["train"]) // 64) * 0.03)) + 1  # about 30 fake seconds unbudgeted
    seconds, trainer, checkpoint, callback = budget_run(digits, tmp_path, 3.0, 64, epochs)
    assert callback.stopped_early and trainer.current_epoch < epochs - 1
    assert 3.0 * 0.8 < seconds <= 3.0  # used most of the budget, and not a fake second more
    read_checkpoint(checkpoint.best_model_path)  # plain tensors and numbers: loads with weights_only
    assert trainer.optimizers[0].param_groups[0]["lr"] < 0.05 / 2  # the LR was annealing to the end


def test_budget_shorter_than_an_epoch_still_validates(digits, tmp_path: Path) -> None:
    seconds, trainer, checkpoint, callback = budget_run(digits, tmp_path, 1.5, 8, epochs=3)
    assert callback.stopped_early
    assert trainer.global_step < trainer.num_training_batches  # stopped inside epoch 1
    assert seconds <= 1.5
    assert "val_loss" in trainer.callback_metrics  # validated before stopping
    assert Path(checkpoint.best_model_path).is_file()


# --- the run's budget, split between a frozen stage and fine-tuning, across resumes -------------


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch):
    """A fake clock for stage times and budgets; batches take 0.05 s, validation batches 0.02 s."""
    clock = FakeClock()
    monkeypatch.setattr(stage_fit, "CLOCK", clock)
    original = stage_fit.build_trainer

    def build(*args, extra_callbacks=None, **kwargs):
        return original(*args, extra_callbacks=[*(extra_callbacks or []), Ticker(clock, 0.05, 0.02)], **kwargs)

    monkeypatch.setattr(stage_fit, "build_trainer", build)
    return clock


def _pretrained_run(tmp_path: Path, budget: float, **options) -> RunConfig:
    """simple_cnn from a weights file: a two-stage transfer run, small enough for seconds of CPU."""
    weights = tmp_path / "start.safetensors"
    save_file(create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8)).state_dict(), weights)
    options = {"feature_cache": False, "frozen_epochs": 60, **options}
    return build_config(
        data="digits",
        model="simple_cnn",
        weights=str(weights),
        time_budget=budget,
        batch_size=32,
        finetune_epochs=60,
        patience=100,
        runs_dir=str(tmp_path / "runs"),
        name="budget",
        **options,
    )


def test_a_two_stage_run_keeps_to_its_budget_split_between_the_stages(fake_time, tmp_path: Path, capsys) -> None:
    result = fit_module.fit(_pretrained_run(tmp_path, 12.0), "test")
    frozen, finetune = result.record.stages
    assert frozen.budget_seconds == pytest.approx(FROZEN_SHARE * 12.0)
    assert frozen.seconds <= frozen.budget_seconds
    assert finetune.budget_seconds == pytest.approx(12.0 - frozen.seconds, abs=0.01)  # the rest
    assert frozen.seconds + finetune.seconds == pytest.approx(result.record.timing.train_seconds, abs=0.02)
    assert 12.0 * 0.8 < result.record.timing.train_seconds <= 12.0
    assert "time budget 12 s: stage 'frozen'" in capsys.readouterr().out


def test_a_resumed_run_gets_only_what_is_left(fake_time, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _pretrained_run(tmp_path, 12.0)

    class Kill(L.Callback):  # Ctrl-C in fine-tuning epoch 3: last.ckpt holds its epoch 2
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if trainer.current_epoch == 2 and pl_module.metadata.get("stage") == "finetune":
                raise KeyboardInterrupt

    original = stage_fit.build_trainer
    monkeypatch.setattr(
        stage_fit,
        "build_trainer",
        lambda *a, extra_callbacks=None, **k: original(*a, extra_callbacks=[*extra_callbacks, Kill()], **k),
    )
    with pytest.raises(fit_module.TrainingInterrupted):
        fit_module.fit(config, "test")
    files = open_run(tmp_path / "runs" / "budget")
    saved = read_checkpoint(files.last)
    assert saved["cnnlab"]["stage"] == "finetune"
    used_before_kill = read_record(files).stages[0].seconds + saved[stage_fit.CLOCK_KEY]
    monkeypatch.setattr(stage_fit, "build_trainer", original)
    fake_time.now += 1000.0  # time passes between the attempts: it does not count
    resumed = fit_module.resume(str(files.root))
    frozen, finetune = resumed.record.stages
    assert finetune.budget_seconds == pytest.approx(12.0 - frozen.seconds, abs=0.01)
    assert finetune.seconds + frozen.seconds <= 12.0  # the resume used only the remainder
    assert finetune.seconds + frozen.seconds > used_before_kill
    assert [a.resumed_at for a in resumed.record.attempts] == [None, "after epoch 2 of stage finetune"]


def test_a_budget_smaller_than_the_extraction_says_so_and_keeps_a_stage_1_model(
    fake_time, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    real_cache_features = stage_data.cache_features

    def slow_extraction(*args, listener=None, **kwargs):  # four batches of 2 fake seconds each
        for done in (100, 200, 300, 400):
            fake_time.now += 2.0
            listener(done, 400, 0.0)
        return real_cache_features(*args, **kwargs)

    monkeypatch.setattr(stage_data, "cache_features", slow_extraction)
    config = _pretrained_run(tmp_path, 5.0, feature_cache=True, frozen_epochs=4)
    result = fit_module.fit(config, "test")
    assert [s.name for s in result.record.stages] == ["frozen"]  # no fine-tuning
    assert result.record.stages[0].epochs == 4  # the head still trained its epochs on the cached features
    assert "cannot be met" in caplog.text and "extracting the backbone's features" in caplog.text
    assert any("only stage 1 was trained" in note for note in result.record.notes)
    assert open_run(tmp_path / "runs" / "budget").best.is_file()  # a stage-1 model to evaluate


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


def test_a_run_reopens_in_the_layout_it_trained_in(run_copy: Path) -> None:
    """evaluate, predict, serve and explain score a channels_last run channels_last (2x faster here)."""
    from cnnlab.models.inference import is_channels_last
    from cnnlab.training.checkpoint import load_trained

    files = open_run(run_copy)
    assert is_channels_last(load_trained(files).model)  # trained with the default: channels_last
    files.config.write_text(files.config.read_text().replace("channels_last: true", "channels_last: false"))
    assert not is_channels_last(load_trained(files).model)


@pytest.mark.slow  # 23 s: torch.compile's first trace; compile is off by default (no faster on a CPU)
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
