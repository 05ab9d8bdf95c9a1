"""Launchers for real: two "nodes" under torchrun on the loopback interface, stopped with Ctrl-C and
resumed; and the command's own launch of ``--devices 2`` (ddp re-runs it, ddp_spawn spawns).

Every process records its file writes (an audit hook put in by a sitecustomize.py): rank 1's are
none, rank 0's are the run's files.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ddp_helpers import free_port, sitecustomize_source, writes_by_rank

from conftest import read_json

TIMEOUT = 240  # seconds any one launch may take on a busy 2-core machine (they take 10-30)
# Small batches: epochs long enough that Ctrl-C after the first lands before the last has begun.
DIGITS = ["digits", "--epochs", "3", "--batch-size", "8", "--seed", "3", "--accelerator", "cpu"]


def _cnnlab_tracebacks(output: str) -> list[str]:
    """Traceback lines in cnnlab's code (torchrun's own agent prints one when it gets Ctrl-C)."""
    return [line for line in output.splitlines() if line.strip().startswith("File") and "cnnlab" in line]


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture
def audited(tmp_path: Path) -> dict:
    """Environment for launched processes: cnnlab from here, CI output, every write under tmp recorded."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(sitecustomize_source())
    work = tmp_path / "work"
    work.mkdir()
    log = tmp_path / "writes.log"
    path = os.pathsep.join(
        [str(hooks), *filter(None, [os.environ.get("PYTHONPATH")]), str(Path(__file__).parents[2] / "src")]
    )
    # Two "nodes" share this machine's 2 cores: one thread each (Lightning would give each both cores).
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "CI": "1",
        "OMP_NUM_THREADS": "1",
        "CNNLAB_TEST_WRITES_LOG": str(log),
        "CNNLAB_TEST_WATCHED": str(work),
        "CNNLAB_CACHE_DIR": str(work / "cache"),
    }
    return {"env": env, "work": work, "log": log}


class Launch:
    """Processes started in their own sessions, their output in files; all killed if a test fails."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env, self.processes = folder, env, []

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        output = open(self.folder / f"{name}.log", "w")  # noqa: SIM115  the process's log for its whole life
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=self.env, cwd=self.folder, start_new_session=True
        )
        process.name = name  # type: ignore[attr-defined]
        self.processes.append(process)
        return process

    def output(self, process: subprocess.Popen) -> str:
        return (self.folder / f"{process.name}.log").read_text()  # type: ignore[attr-defined]

    def wait(self, *processes: subprocess.Popen) -> list[int]:
        deadline = time.time() + TIMEOUT
        codes = []
        for process in processes:
            try:
                codes.append(process.wait(timeout=max(1.0, deadline - time.time())))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{process.name} still running after {TIMEOUT}s:\n{self.output(process)[-3000:]}")  # type: ignore[attr-defined]
        return codes

    def wait_for(self, process: subprocess.Popen, text: str) -> None:
        deadline = time.time() + TIMEOUT
        while text not in self.output(process):
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"'{text}' never came from {process.name}:\n{self.output(process)[-3000:]}")  # type: ignore[attr-defined]
            time.sleep(0.05)

    def alive(self, process: subprocess.Popen) -> list[str]:
        """Processes left in the session of ``process`` (none once it stopped cleanly)."""
        found = subprocess.run(
            ["ps", "-o", "pid=,stat=,args=", "--sid", str(process.pid)], capture_output=True, text=True
        ).stdout.splitlines()
        return [line for line in found if line.split()[1][0] != "Z"]  # zombies are gone, only not reaped

    def kill_all(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture
def launch(tmp_path: Path, audited: dict):
    launcher = Launch(tmp_path, audited["env"])
    yield launcher
    launcher.kill_all()


def _two_nodes(launch: Launch, name: str, args: list[str]) -> list[subprocess.Popen]:
    """``torchrun --nnodes 2`` started twice on this machine, as node 0 and node 1, one process each."""
    port = free_port()
    return [
        launch.start(
            f"{name}-node{rank}",
            [
                *_torchrun(),
                "--nnodes",
                "2",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "--nproc-per-node",
                "1",
                "-m",
                "cnnlab",
                *args,
            ],
        )
        for rank in (0, 1)
    ]


@pytest.mark.slow  # 46 s: two torchrun processes, interrupted and resumed; the one-node test covers the path
def test_two_nodes_under_torchrun_stop_together_on_ctrl_c_and_resume_to_one_run(launch, audited) -> None:
    runs = audited["work"] / "runs"
    node0, node1 = _two_nodes(
        launch,
        "first",
        [
            "train",
            *DIGITS,
            "--strategy",
            "ddp",
            "--devices",
            "1",
            "--num-nodes",
            "2",
            "--runs-dir",
            str(runs),
            "--name",
            "two-nodes",
        ],
    )
    launch.wait_for(node0, "epoch 1/3")
    os.killpg(node0.pid, signal.SIGINT)  # Ctrl-C in node 0's terminal: its torchrun and its worker
    launch.wait(node0, node1)  # node 1 stops too: the ranks agreed to stop at the same step
    assert launch.alive(node0) == [] and launch.alive(node1) == []
    first = launch.output(node0)
    assert "resume with: cnnlab train --resume" in first and _cnnlab_tracebacks(first) == [], first[-3000:]
    assert _cnnlab_tracebacks(launch.output(node1)) == [] and "epoch" not in launch.output(node1)  # rank 1 is silent
    run = runs / "two-nodes"
    meta = read_json(run / "run.json")
    assert meta["status"] == "interrupted" and (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "report.html").is_file()
    stopped_after = meta["stages"][0]["epochs"]

    node0, node1 = _two_nodes(launch, "resume", ["train", "--resume", str(run)])
    assert launch.wait(node0, node1) == [0, 0], launch.output(node0)[-3000:]
    assert "test accuracy" in launch.output(node0) and "test accuracy" not in launch.output(node1)
    assert [p.name for p in runs.iterdir()] == ["two-nodes"]  # one run folder for both nodes, both times
    meta = read_json(run / "run.json")
    assert meta["status"] == "completed"
    assert [a.get("resumed_at") for a in meta["attempts"]] == [None, f"after epoch {stopped_after} of stage train"]
    assert meta["attempts"][-1]["processes"] == 2 and meta["attempts"][-1]["nodes"] == 2
    epochs = [row.split(",")[1] for row in (run / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [str(e) for e in range(3) for _ in (0, 1)]  # nothing lost, nothing twice
    assert read_json(run / "metrics.json")["test"]["accuracy"] > 0.8
    writes = writes_by_rank(str(audited["log"]))
    assert writes.get("1", []) == []  # rank 1 wrote nothing, in either launch
    assert any(w.endswith("run.json") for w in writes["0"]) and any("last.ckpt" in w for w in writes["0"])


@pytest.mark.slow  # two more launches of two processes: 30-60 s on 2 cores; the pair in test_distributed.py
# runs these processes' code with the environment this launcher gives them, in make test
@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_the_command_starts_its_own_processes(launch, audited, strategy: str) -> None:
    """`cnnlab train DATA --devices 2`: ddp re-runs the command for rank 1, ddp_spawn spawns both ranks."""
    runs = audited["work"] / "runs"
    process = launch.start(
        strategy,
        [
            sys.executable,
            "-m",
            "cnnlab",
            "train",
            *DIGITS,
            "--strategy",
            strategy,
            "--devices",
            "2",
            "--runs-dir",
            str(runs),
        ],
    )
    assert launch.wait(process) == [0], launch.output(process)[-3000:]
    output = launch.output(process)
    assert output.count("epoch 3/3") == 1 and output.count("test accuracy") == 1  # one voice: rank 0's
    assert "2 processes (" in output and _cnnlab_tracebacks(output) == []
    assert [p.name for p in runs.iterdir()] == ["simple_cnn-digits"]
    meta = read_json(runs / "simple_cnn-digits" / "run.json")
    assert meta["status"] == "completed" and meta["attempts"][-1]["processes"] == 2
    assert read_json(runs / "simple_cnn-digits" / "metrics.json")["test"]["accuracy"] > 0.8
    writers = set(writes_by_rank(str(audited["log"])))
    assert writers == {"0"}  # rank 1 (and, with ddp_spawn, the process waiting for both) wrote nothing
