"""A two-stage transfer run killed (SIGKILL) anywhere resumes to the uninterrupted run's history.

Each run is a real process that kills itself at an exact point (a Lightning hook of a given stage
and epoch, or the final evaluation), so the kill lands where the test says on any machine; the
resume is a plain ``cnnlab train --resume``. The model is simple_cnn started from a weights file,
which makes it a two-stage transfer run that trains in seconds on the 8x8 digits.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file

from cnnlab.training.checkpoint import read_checkpoint
from cnnlab.training.stage_fit import CLOCK_KEY
from conftest import read_json

# KILL is "stage:hook:epoch" or "evaluate"; the process sends itself SIGKILL there.
KILLER = """
import os, signal, sys
import lightning as L
from cnnlab.cli.main import main
from cnnlab.training import stage_fit
from cnnlab.evaluation import run_evaluation as evaluate_run

where = sys.argv[1]
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
if where == "evaluate":
    evaluate_run.evaluate_split = die
elif where == "between":
    fit_stage = stage_fit.fit_stage
    def between(ctx, stage, *args, **kwargs):
        if stage.name == "finetune":
            die()
        return fit_stage(ctx, stage, *args, **kwargs)
    from cnnlab.training import run_fit as fit
    fit.fit_stage = between
else:
    stage, hook, epoch = where.split(":")
    class Kill(L.Callback):
        pass
    def hooked(self, trainer, pl_module, *args):
        if pl_module.metadata.get("stage") == stage and trainer.current_epoch == int(epoch):
            die()
    setattr(Kill, hook, hooked)
    build = stage_fit.build_trainer
    def build_killing(*a, extra_callbacks=None, **k):
        return build(*a, extra_callbacks=[*extra_callbacks, Kill()], **k)
    stage_fit.build_trainer = build_killing
sys.exit(main(sys.argv[2:]))
"""


def _train_args(tmp_path: Path) -> list[str]:
    weights = tmp_path / "start.safetensors"
    if not weights.exists():
        import torch

        from cnnlab.models import create_model

        torch.manual_seed(0)
        save_file(create_model("simple_cnn", num_classes=10, in_chans=1, image_size=(8, 8)).state_dict(), weights)
    return [
        "train",
        "digits",
        "--model",
        "simple_cnn",
        "--weights",
        str(weights),
        "--deterministic",
        "--seed",
        "5",
        "--frozen-epochs",
        "6",
        "--finetune-epochs",
        "4",
        "--finetune-lr",
        "1e-3",
        "--batch-size",
        "64",
        # One thread, kept by --resume: tiny tensors gain nothing from two, and every process (the
        # reference, the killed one, the resumed one) then sums floats alike on any machine and load.
        "--threads",
        "1",
        "--runs-dir",
        str(tmp_path / "runs"),
    ]


def _history(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((run / "metrics.csv").read_text())))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ref")
    subprocess.run(
        [sys.executable, "-m", "cnnlab", *_train_args(tmp), "--name", "full"],
        check=True,
        capture_output=True,
        timeout=300,
    )
    run = tmp / "runs" / "full"
    return {
        "history": _history(run),
        "metrics": read_json(run / "metrics.json")["test"],
        "meta": read_json(run / "run.json"),
    }


KILL_POINTS = {
    "before the first checkpoint": "frozen:on_train_batch_end:0",
    "during stage 1": "frozen:on_train_batch_end:3",  # mid-epoch: the epoch's first batch done, then lost
    "between the stages": "between",
    "during stage 2": "finetune:on_train_epoch_start:2",
    "during the final evaluation": "evaluate",
}
RESUMED_AT = {
    "before the first checkpoint": "at the start (no checkpoint yet)",
    "during stage 1": "after epoch 3 of stage frozen",
    "between the stages": "at the start of stage finetune",
    "during stage 2": "after epoch 2 of stage finetune",
    "during the final evaluation": "at the final evaluation",
}


# make test kills at three points (mid-epoch in stage 1, between the stages, during the final
# evaluation); the other two, whose resume paths those share, run with the slow tests. The mid-epoch
# kill also stands for test_resume's from-scratch kills, which run with the slow tests.
SLOW_POINTS = {"before the first checkpoint", "during stage 2"}


@pytest.mark.parametrize(
    "point", [pytest.param(p, marks=pytest.mark.slow) if p in SLOW_POINTS else p for p in KILL_POINTS]
)
def test_a_kill_anywhere_then_resume_gives_the_uninterrupted_history(point: str, tmp_path: Path, reference) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, KILL_POINTS[point], *_train_args(tmp_path), "--name", "k"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    run = tmp_path / "runs" / "k"
    before = read_json(run / "run.json")
    last = run / "checkpoints" / "last.ckpt"
    saved = read_checkpoint(last) if last.is_file() else {}
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--resume", str(run)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    history = _history(run)
    assert len(history) == len(reference["history"]) > 10
    assert history == reference["history"]  # row for row: both stages, in order, nothing lost or doubled
    assert {row["stage"] for row in history} == {"frozen", "finetune"}
    assert read_json(run / "metrics.json")["test"] == reference["metrics"]
    meta = read_json(run / "run.json")
    assert [a.get("resumed_at") for a in meta["attempts"]] == [None, RESUMED_AT[point]]
    assert [s["epochs"] for s in meta["stages"]] == [s["epochs"] for s in reference["meta"]["stages"]]
    # Times count every attempt's work: finished stages keep theirs, an interrupted stage goes on
    # from the seconds its checkpoint holds.
    done_before = {r["name"]: r["seconds"] for r in before.get("stages", []) if r.get("done")}
    seconds = {r["name"]: r["seconds"] for r in meta["stages"]}
    assert all(seconds[name] == value for name, value in done_before.items())
    interrupted = (saved.get("cnnlab") or {}).get("stage")
    if interrupted and interrupted not in done_before:
        assert seconds[interrupted] > saved[CLOCK_KEY] > 0
    assert meta["timing"]["train_seconds"] == pytest.approx(sum(seconds.values()), abs=0.02)
    page = (run / "report.html").read_text()
    assert "Resumed once" in page and RESUMED_AT[point] in page
