"""Unsafe or damaged files are refused with a clear message; resource failures are explained."""

from __future__ import annotations

import errno
import os
import pickle
from pathlib import Path

import pytest
import torch

from cnnlab.training import trainer as trainer_module
from cnnlab.training.module import ClassifierModule


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from cnnlab.cli.main import main

    runs = tmp_path_factory.mktemp("safety") / "runs"
    assert main(["train", "digits", "--epochs", "1", "--runs-dir", str(runs), "--name", "r"]) == 0
    return runs / "r"


class _Payload:
    """Unpickling this runs os.system: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_checkpoint_is_refused_and_never_runs(cli, trained_run, tmp_path):
    marker = tmp_path / "pwned"
    best = trained_run / "checkpoints" / "best.ckpt"
    original = best.read_bytes()
    try:
        best.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
        code, _, err = cli("evaluate", trained_run)
        assert code == 2
        assert "pickled Python objects" in err
        assert not marker.exists()
    finally:
        best.write_bytes(original)


def test_truncated_checkpoint_is_a_clear_error(cli, trained_run):
    best = trained_run / "checkpoints" / "best.ckpt"
    original = best.read_bytes()
    try:
        best.write_bytes(original[: len(original) // 2])
        code, _, err = cli("evaluate", trained_run)
        assert code == 2
        assert "damaged or truncated" in err
        assert "Traceback" not in err
    finally:
        best.write_bytes(original)


def test_malicious_weights_file_is_refused(cli, tmp_path):
    marker = tmp_path / "pwned"
    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(_Payload(marker)))
    code, _, err = cli("train", "digits", "--weights", weights, "--runs-dir", tmp_path / "runs")
    assert code == 2 and "pickled Python objects" in err
    assert not marker.exists()


def test_disk_full_keeps_previous_checkpoint(cli, tmp_path, monkeypatch):
    real_write = trainer_module.atomic_write_bytes
    calls = {"n": 0}

    def full_after_first(path, data):
        calls["n"] += 1
        if calls["n"] > 2:  # best + last of epoch 1 are written; epoch 2 finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(trainer_module, "atomic_write_bytes", full_after_first)
    runs = tmp_path / "runs"
    code, _, err = cli("train", "digits", "--epochs", "3", "--runs-dir", runs, "--name", "d")
    assert code == 2
    assert "disk full" in err and "--resume" in err
    last = runs / "d" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # the good checkpoint of epoch 1


def test_out_of_memory_suggests_a_smaller_batch(cli, tmp_path, monkeypatch):
    def oom(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ClassifierModule, "training_step", oom)
    code, _, err = cli("train", "digits", "--batch-size", "96", "--runs-dir", tmp_path / "runs")
    assert code == 2
    assert "out of memory at batch size 96; try --batch-size 48" in err
