"""Where a command's time goes (phases in run.json and one printed line), and the threads policy."""

from __future__ import annotations

import json


def test_a_run_records_and_prints_its_phases(cli, tmp_path) -> None:
    code, out, _ = cli("train", "digits", "--model", "simple_cnn", "--epochs", "1", "--threads", "1",
                       "--runs-dir", str(tmp_path), "--name", "timed")
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
    seconds = float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                   timeout=60).stdout)
    assert 0.5 <= seconds < 10  # a wall-clock start time was off by tens of seconds on this VM
