"""cnnlab.aside: work in a forked process, joined before anything reads what it wrote."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from cnnlab import aside
from cnnlab.aside import Aside


def _write_pid_later(out: Path) -> None:
    time.sleep(0.3)  # still running when the parent goes on
    out.write_text(str(os.getpid()))


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="fork with two cores")
def test_work_runs_in_another_process_and_join_waits_for_it(tmp_path: Path) -> None:
    out = tmp_path / "pid.txt"
    work = Aside(lambda: _write_pid_later(out), "test work")
    assert not out.exists()  # the parent went on at once
    work.join()
    assert int(out.read_text()) != os.getpid()
    assert work.process is not None and not work.process.is_alive()


def test_work_that_fails_aside_is_done_again_here_with_its_error(tmp_path: Path) -> None:
    calls = tmp_path / "calls"

    def failing() -> None:
        with calls.open("a") as f:
            f.write(f"{os.getpid()}\n")
        raise ValueError("no figure today")

    work = Aside(failing, "test work")
    with pytest.raises(ValueError, match="no figure today"):  # the error shows in the parent
        work.join()
    pids = calls.read_text().split()
    assert pids[-1] == str(os.getpid())
    if work.process is not None:  # it was tried aside first
        assert len(pids) == 2 and pids[0] != pids[1]


def test_without_fork_the_work_runs_in_place_at_join(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aside, "_forkable", lambda: False)
    out = tmp_path / "pid.txt"
    work = Aside(lambda: out.write_text(str(os.getpid())), "test work")
    assert work.process is None and not out.exists()
    work.join()
    assert out.read_text() == str(os.getpid())


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="fork with two cores")
def test_work_stuck_aside_is_killed_and_done_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aside, "PATIENCE", 0.5)
    out = tmp_path / "pid.txt"

    def stuck_when_forked() -> None:
        if os.getpid() != parent:
            time.sleep(60)  # like a lock another thread held at fork time
        out.write_text(str(os.getpid()))

    parent = os.getpid()
    started = time.monotonic()
    work = Aside(stuck_when_forked, "test work")
    work.join()
    assert time.monotonic() - started < 10
    assert out.read_text() == str(parent)
    assert work.process is not None and not work.process.is_alive()


@pytest.mark.skipif(sys.platform != "linux" or (os.cpu_count() or 1) < 2, reason="fork with two cores")
@pytest.mark.parametrize("pinned", [False, True])
def test_while_work_runs_aside_this_process_leaves_it_a_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: bool
) -> None:
    """Two OpenMP threads beside a busy child on two cores wait on each other; --threads is the user's."""
    import torch

    from cnnlab import threads

    before = torch.get_num_threads()
    choice = threads.ThreadChoice(2, "test", pinned=pinned, share=2)
    monkeypatch.setattr(threads, "_WATCH", threads.ThreadWatch(choice))
    try:
        torch.set_num_threads(2)
        work = Aside(lambda: time.sleep(0.2), "test work")
        assert torch.get_num_threads() == (2 if pinned else 1)
        work.join()
        assert torch.get_num_threads() == 2 and not threads.watch().held
    finally:
        torch.set_num_threads(before)
