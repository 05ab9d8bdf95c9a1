"""Crash safety: a run killed (SIGKILL) or stopped (Ctrl-C) at any point resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_phases import check_phases_of_every_attempt
from test_same_metrics import RECORDED, SCRATCH, check_same, signature

from conftest import read_json

# 6 epochs of small batches: enough training left after a signal (seconds, not 0.1 s an epoch) that
# a busy machine cannot finish the run before the signal lands.
# --verbose: every epoch's line (and each stage's trainable table), which the tests wait for.
TRAIN = [*SCRATCH, "--verbose"]


def _cnnlab(*args: str) -> list[str]:
    return [sys.executable, "-u", "-m", "cnnlab", *map(str, args)]


def _interruptible() -> None:
    """Ctrl-C reaches the child even when the tests run as a background job, whose shell starts
    them with SIGINT ignored (inherited through exec, so Python would not install its handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(runs: Path, name: str) -> tuple[subprocess.Popen, Path]:
    log = runs.parent / f"{name}.log"
    handle = log.open("w")
    process = subprocess.Popen(
        _cnnlab("train", *TRAIN, "--runs-dir", runs, "--name", name),
        stdout=handle,
        stderr=subprocess.STDOUT,
        env={**os.environ, "CI": "1"},
        preexec_fn=_interruptible,
    )
    return process, log


def _wait_for(log: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log.read_text():
            return
        if process.poll() is not None:
            pytest.fail(f"training ended before '{text}':\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    pytest.fail(f"'{text}' not seen in {timeout}s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The uninterrupted run's test metrics and history. It is the recorded one: on the machine and torch
    the recording was made with, test_same_metrics (in make test) trains these options and asserts the
    files byte for byte, so they are read from the recording instead of training the run again here.
    Elsewhere the recording agrees only to 1e-4 and the run is trained (and checked against it)."""
    full = RECORDED / "scratch"
    if read_json(RECORDED / "recorded_on.json") != signature():
        runs = tmp_path_factory.mktemp("ref") / "runs"
        subprocess.run(
            _cnnlab("train", *TRAIN, "--runs-dir", runs, "--name", "full"), check=True, capture_output=True, timeout=300
        )
        full = runs / "full"
        check_same(full, RECORDED / "scratch")
    return {"metrics": read_json(full / "metrics.json")["test"], "history": (full / "metrics.csv").read_text()}


# All three points run with the slow tests. In make test, test_resume_stages kills (SIGKILL) mid-epoch
# (during stage 1: inside an epoch, at an exact batch), between the stages and during the final
# evaluation, each resumed to the uninterrupted history; the from-scratch run's resume to the
# recorded history and metrics is test_ctrl_c_saves_reports_and_resumes below.
@pytest.mark.parametrize(
    "after,delay",
    [
        pytest.param("Trainable params", 0.0, id="before-first-epoch", marks=pytest.mark.slow),
        pytest.param("epoch 1/6", 0.4, id="mid-epoch-2", marks=pytest.mark.slow),
        pytest.param("epoch 3/6", 0.0, id="after-epoch-3", marks=pytest.mark.slow),
    ],
)
def test_sigkill_then_resume_equals_uninterrupted(tmp_path, reference, after, delay):
    runs = tmp_path / "runs"
    process, log = _start(runs, "k")
    _wait_for(log, after, process)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    resumed = subprocess.run(_cnnlab("train", "--resume", runs / "k"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_json(runs / "k" / "metrics.json")["test"] == reference["metrics"]
    assert (runs / "k" / "metrics.csv").read_text() == reference["history"]
    assert read_json(runs / "k" / "run.json")["status"] == "completed"


def test_ctrl_c_saves_reports_and_resumes(tmp_path, reference):
    """Stopped by SIGINT after two whole epochs (a third of the training: more than the resumed attempt
    spends outside its epochs, which the phases check needs), then resumed to the uninterrupted run."""
    runs = tmp_path / "runs"
    process, log = _start(runs, "c")
    _wait_for(log, "epoch 2/6", process)
    process.send_signal(signal.SIGINT)
    code = process.wait(timeout=60)
    assert code == 130, f"exit code {code}; the log ends:\n{log.read_text()[-600:]}"
    output = log.read_text()
    assert "resume with: cnnlab train --resume" in output
    assert "Traceback" not in output
    run = runs / "c"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "report.html").is_file()
    stopped = read_json(run / "run.json")
    assert stopped["status"] == "interrupted"
    resumed = subprocess.run(_cnnlab("train", "--resume", run), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_json(run / "metrics.json")["test"] == reference["metrics"]
    assert (run / "metrics.csv").read_text() == reference["history"]  # epoch for epoch, nothing lost or doubled
    check_phases_of_every_attempt(run, stopped["attempts"])  # timing counts both attempts


def test_closed_output_stops_the_run_on_record_and_resumable(tmp_path):
    """`cnnlab train ... | head`: the reader goes away mid-training. No traceback: exit 141 (as a
    process stopped by SIGPIPE), the run says interrupted and how to go on, its last epoch saved."""
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        _cnnlab("train", *TRAIN, "--runs-dir", runs, "--name", "p"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CI": "1"},
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:  # read as `head` would, then leave
        if line.startswith("epoch 1/6"):
            break
    process.stdout.close()
    errors = process.stderr.read()
    assert process.wait(timeout=60) == 141, errors[-1500:]
    assert "Traceback" not in errors and "broken pipe" in errors
    assert f"cnnlab train --resume {runs / 'p'}" in errors
    assert read_json(runs / "p" / "run.json")["status"] == "interrupted"
    assert (runs / "p" / "checkpoints" / "last.ckpt").is_file()  # what --resume goes on from (tested above)


def test_resume_refuses_a_completed_run_and_extra_options(cli, tmp_path):
    runs = tmp_path / "runs"
    assert cli("train", "digits", "--epochs", "1", "--runs-dir", runs, "--name", "done")[0] == 0
    code, _, err = cli("train", "--resume", runs / "done")
    assert code == 2 and "already complete" in err
    code, _, err = cli("train", "--resume", runs / "done", "--epochs", "3")
    assert code == 2 and "drop the other options" in err
