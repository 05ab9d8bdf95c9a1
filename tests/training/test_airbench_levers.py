"""airbench's levers as run options: --flip-mode alternate, --lookahead K, --scheduler linear.

Each trains a tiny set of real photo crops and learns; the alternating flip keeps its choice of
images across a Ctrl-C and resume; Lookahead wraps the optimiser; bad values are one line naming the flag.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from cnnlab.augment.flip import AlternatingFlip
from cnnlab.config import TrainConfig
from cnnlab.training import stage_fit
from cnnlab.training.optim import build_optimizer, build_scheduler
from cnnlab.training.time_budget import linear_factor
from conftest import read_json, write_photo_crops

TINY = ["--model", "fast_cnn_small", "--epochs", "5", "--batch-size", "16", "--threads", "1", "--seed", "1"]


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Two classes of 32-px photo crops (a temple, a flower): mirrored, each is still its class."""
    return write_photo_crops(tmp_path_factory.mktemp("crops") / "photos", per_class=40, side=32)


def _val_accuracies(run: Path) -> list[float]:
    with (run / "metrics.csv").open() as handle:
        return [float(row["val_acc"]) for row in csv.DictReader(handle) if row.get("val_acc")]


@pytest.mark.parametrize(
    "options",
    [["--hflip", "--flip-mode", "alternate"], ["--lookahead", "2"], ["--scheduler", "linear", "--lr", "0.05"]],
    ids=["alternate-flip", "lookahead", "linear-lr"],
)
def test_each_lever_trains_a_tiny_set_and_its_accuracy_rises(cli, crops, tmp_path, one_torch_thread, options):
    code, _, err = cli("train", crops, *TINY, *options, "--runs-dir", tmp_path / "runs", "--name", "lever")
    assert code == 0, err
    run = tmp_path / "runs" / "lever"
    val = _val_accuracies(run)
    assert max(val[1:]) > val[0] or val[0] == 1.0, val
    assert read_json(run / "metrics.json")["test"]["accuracy"] >= 0.75  # two classes: chance is 0.5


def test_alternating_flip_mirrors_the_same_images_after_a_ctrl_c_and_resume(
    cli, crops, tmp_path, one_torch_thread, monkeypatch
):
    """Which images each epoch mirrors, uninterrupted and stopped after two epochs then resumed: the same."""
    seen: list[tuple[int, tuple[int, ...], tuple[bool, ...]]] = []
    mirror = AlternatingFlip.__call__

    def recording(self, images, positions, epoch):  # type: ignore[no-untyped-def]
        seen.append((epoch, tuple(positions.tolist()), tuple(self.mask(positions, epoch).tolist())))
        return mirror(self, images, positions, epoch)

    monkeypatch.setattr(AlternatingFlip, "__call__", recording)
    args = [crops, *TINY, "--epochs", "4", "--hflip", "--flip-mode", "alternate", "--runs-dir", tmp_path / "runs"]
    assert cli("train", *args, "--name", "whole")[0] == 0
    whole, seen[:] = list(seen), []

    class CtrlC(L.Callback):
        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch == 2:
                raise KeyboardInterrupt

    build = stage_fit.build_trainer
    monkeypatch.setattr(
        stage_fit,
        "build_trainer",
        lambda *a, extra_callbacks=(), **k: build(*a, extra_callbacks=[*extra_callbacks, CtrlC()], **k),
    )
    assert cli("train", *args, "--name", "stopped")[0] == 130
    monkeypatch.setattr(stage_fit, "build_trainer", build)
    first_attempt, seen[:] = list(seen), []
    code, _, err = cli("train", "--resume", tmp_path / "runs" / "stopped")
    assert code == 0, err
    assert {epoch for epoch, _, _ in first_attempt} <= {0, 1, 2} and {epoch for epoch, _, _ in seen} == {2, 3}
    by_batch = {(epoch, positions): mask for epoch, positions, mask in whole}
    assert all(by_batch[(epoch, positions)] == mask for epoch, positions, mask in first_attempt + seen)
    # Every image the other way round from one epoch to the next, as epoch 0 chose.
    flips = {epoch: {} for epoch in range(4)}
    for epoch, positions, mask in whole:
        flips[epoch].update(zip(positions, mask))
    assert all(flips[1][p] != flips[0][p] and flips[2][p] == flips[0][p] for p in flips[0])


def test_lookahead_wraps_the_optimiser_and_pulls_the_weights_back_every_k_steps() -> None:
    from timm.optim import Lookahead

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    plain = copy.deepcopy(layer)
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, weight_decay=0.0, lookahead=2, lookahead_alpha=0.5)
    wrapped = build_optimizer(layer.parameters(), cfg, lr=0.1)
    sgd = build_optimizer(plain.parameters(), dataclasses.replace(cfg, lookahead=0), lr=0.1)
    assert isinstance(wrapped, Lookahead) and not isinstance(sgd, Lookahead)
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def steps(count: int) -> None:
        for _ in range(count):
            for net, optimizer in ((layer, wrapped), (plain, sgd)):
                optimizer.zero_grad()
                torch.nn.functional.mse_loss(net(x), y).backward()
                optimizer.step()

    steps(2)  # timm takes the slow copy at the first sync (K=2 steps): so far plain SGD
    assert torch.equal(layer.weight, plain.weight)
    slow = layer.weight.detach().clone()
    steps(2)  # the next sync: the weights go back half way (alpha 0.5) from the slow copy to SGD's
    assert torch.allclose(layer.weight, slow + 0.5 * (plain.weight - slow))
    assert not torch.allclose(layer.weight, plain.weight)
    assert "lookahead_slow_buff" in wrapped.state_dict()["state"][0]  # the slow weights are checkpointed
    build_scheduler(wrapped, TrainConfig(scheduler="linear"), 10)  # a schedule sets the wrapped groups' rates
    assert wrapped.param_groups[0]["lr"] == sgd.param_groups[0]["lr"] * linear_factor(0) != sgd.param_groups[0]["lr"]


def test_linear_shape_warms_up_from_a_fifth_then_falls_to_seven_hundredths() -> None:
    assert linear_factor(0.0) == pytest.approx(0.2)
    assert linear_factor(0.23) == pytest.approx(1.0)
    assert linear_factor(1.0) == pytest.approx(0.07)
    values = [linear_factor(p) for p in np.linspace(0, 1, 101)]
    peak = int(np.argmax(values))
    assert all(np.diff(values[: peak + 1]) > 0) and all(np.diff(values[peak:]) < 0)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (["--flip-mode", "sideways"], "--flip-mode 'sideways'; choose from random, alternate"),
        (["--flip-mode", "alternate"], "--flip-mode alternate chooses which images --hflip mirrors: add --hflip"),
        (["--lookahead", "-1"], "--lookahead must be at least 0, got -1"),
        (["--lookahead", "two"], "--lookahead"),
        (["--lookahead-alpha", "1.5"], "--lookahead-alpha"),
        (["--scheduler", "linearly"], "--scheduler"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(cli, crops, tmp_path, flags, expected):
    code, out, err = cli("train", crops, *flags, "--runs-dir", tmp_path / "runs")
    assert code == 2, (out, err)
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in err, err
