"""Where a command's time goes (phases in run.json and one printed line), and the threads policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_a_run_records_and_prints_its_phases(cli, tmp_path) -> None:
    code, out, _ = cli(
        "train",
        "digits",
        "--model",
        "simple_cnn",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--runs-dir",
        str(tmp_path),
        "--name",
        "timed",
    )
    assert code == 0
    meta = json.loads((tmp_path / "timed" / "run.json").read_text())
    phases, total = meta["timing"]["phases"], meta["timing"]["total_seconds"]
    assert {"data", "model", "training", "evaluation", "figures", "report"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values()) and phases["training"] > 0
    assert sum(phases.values()) <= total + 0.05  # phases never count the same second twice
    line = next(line for line in out.splitlines() if line.startswith("time: "))
    assert "training" in line and f"total {total:.1f} s" in line
    assert meta["attempts"][-1]["threads"] == "1 (--threads)"
    assert "Time by phase" in (tmp_path / "timed" / "report.html").read_text()


def test_start_up_counts_from_the_process_start() -> None:
    import subprocess
    import sys

    probe = "import time; time.sleep(0.5); from cnnlab.phases import process_seconds; print(process_seconds())"
    seconds = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60).stdout)
    assert 0.5 <= seconds < 10  # a wall-clock start time was off by tens of seconds on this VM


# Ctrl-C (SIGINT) sent by the process to itself at the start of epoch 3: Lightning stops there
# gracefully, as for a user's Ctrl-C, at the same point on any machine.
CTRL_C_AT_EPOCH_3 = """
import os, signal, sys
import lightning as L
from cnnlab.cli.main import main
from cnnlab.training import stage_fit

class CtrlC(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)

build = stage_fit.build_trainer
def build_stopping(*a, extra_callbacks=None, **k):
    return build(*a, extra_callbacks=[*extra_callbacks, CtrlC()], **k)
stage_fit.build_trainer = build_stopping
sys.exit(main(sys.argv[1:]))
"""


# make test stops and resumes a run once, in test_resume.py's test_ctrl_c_saves_reports_and_resumes,
# which checks its phases with check_phases_of_every_attempt: this run, stopped the same way (SIGINT
# inside an epoch after whole epochs) and resumed with the same command, adds no path of its own.
@pytest.mark.slow
def test_phases_of_a_stopped_and_resumed_run_count_every_attempt(tmp_path) -> None:
    """timing.phases is the sum of the attempts' phases (each kept in attempts[]), so its training
    time covers train_seconds, which counts every attempt's work; once it held the last attempt's only."""
    import signal
    import subprocess
    import sys

    run = tmp_path / "runs" / "stopped"
    train = [
        "train",
        "digits",
        "--model",
        "simple_cnn",
        "--epochs",
        "5",
        "--threads",
        "1",
        "--batch-size",
        "32",
        "--runs-dir",
        str(tmp_path / "runs"),
        "--name",
        "stopped",
    ]
    stopped = subprocess.run(
        [sys.executable, "-c", CTRL_C_AT_EPOCH_3, *train],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    first = json.loads((run / "run.json").read_text())["attempts"]
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "--resume", str(run)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    check_phases_of_every_attempt(run, first)


def check_phases_of_every_attempt(run: Path, first: list[dict]) -> None:
    """A run stopped once (``first``: its attempts[] then) and resumed to the end: timing.phases is the sum
    of the attempts' phases, each kept in attempts[], so its training time covers train_seconds, which
    counts every attempt's work; once it held the last attempt's only."""
    assert len(first) == 1 and first[0]["phases"]["training"] > 0  # the stopped attempt's time is on record
    meta = json.loads((run / "run.json").read_text())
    attempts, timing = meta["attempts"], meta["timing"]
    assert len(attempts) == 2 and attempts[0]["phases"] == first[0]["phases"]
    assert all(a["phases"]["training"] > 0 for a in attempts)
    for name, seconds in timing["phases"].items():  # the sum over the attempts, phase by phase
        assert seconds == pytest.approx(sum(a["phases"].get(name, 0.0) for a in attempts), abs=0.02)
    assert timing["total_seconds"] == pytest.approx(sum(a["total_seconds"] for a in attempts), abs=0.02)
    # The two measures of training time agree: the phases cover the stages' clocks (which count
    # every attempt's epochs); the last attempt alone did not cover them.
    assert timing["phases"]["training"] >= timing["train_seconds"] - 0.05
    assert attempts[-1]["phases"]["training"] < timing["train_seconds"]
    assert sum(timing["phases"].values()) <= timing["total_seconds"] + 0.05
