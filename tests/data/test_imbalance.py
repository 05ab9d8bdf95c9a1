"""Imbalanced data: a balanced sampler draws classes equally; class weights train end to end."""

from __future__ import annotations

import shutil

import torch

from cnnlab.data.loaders import EpochBatches
from conftest import read_json, write_shapes_folder


def test_balanced_sampler_draws_each_class_about_equally():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    sampler = EpochBatches(labels, batch_size=100, shuffle=True, seed=1, balanced=True)
    drawn = torch.cat([labels[torch.tensor(batch)] for batch in sampler])
    counts = torch.bincount(drawn, minlength=3).float()
    assert len(drawn) == 1000
    assert (counts / 1000 - 1 / 3).abs().max() < 0.06  # unbalanced order would give 0.9 / 0.09 / 0.01


def test_epoch_order_depends_only_on_seed_and_epoch():
    labels = torch.arange(50) % 5
    a, b = EpochBatches(labels, 8, True, seed=3), EpochBatches(labels, 8, True, seed=3)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_class_weights_and_balanced_sampler_train(cli, tmp_path):
    data = write_shapes_folder(tmp_path / "imbalanced", per_class=30)
    for path in sorted((data / "right").iterdir())[6:]:
        path.unlink()  # 30 / 30 / 6 images
    code, _, err = cli("train", data, "--epochs", "3", "--batch-size", "16", "--class-weights", "auto",
                       "--sampler", "balanced", "--runs-dir", tmp_path / "runs", "--name", "w")
    assert code == 0, err
    config = (tmp_path / "runs" / "w" / "config.yaml").read_text()
    assert "class_weights: auto" in config and "sampler: balanced" in config
    assert read_json(tmp_path / "runs" / "w" / "run.json")["data"]["splits"]["train"]["per_class"]["right"] >= 1
    shutil.rmtree(tmp_path / "runs")
