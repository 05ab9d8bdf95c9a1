"""cnnlab's thread policy: the count it picks for a given load, and the watch that moves it mid-command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cnnlab import threads


class FakeSampler:
    """Other processes' use, as the test says it is."""

    def __init__(self, readings: list[float | None]) -> None:
        self.readings = list(readings)

    def others(self) -> float | None:
        return self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def two_cores(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = torch.get_num_threads()
    yield
    torch.set_num_threads(saved)


@pytest.mark.parametrize(
    "others, cores, share, expected",
    [
        (None, 2, 2, 2),  # unreadable: the whole share
        (0.1, 2, 2, 2),  # background noise leaves both cores
        (0.5, 2, 2, 1),  # another process shows at half a core while cnnlab's threads hold both
        (1.0, 2, 2, 1),
        (3.5, 2, 2, 1),  # never below one thread
        (0.0, 2, 1, 1),  # two cnnlab processes (DDP) on two cores: one each
        (3.0, 8, 8, 5),  # a bigger machine: what the others leave
    ],
)
def test_threads_are_the_cores_other_processes_leave(others, cores, share, expected) -> None:
    assert threads.threads_for(others, cores, share) == expected


def test_choose_says_why_and_pins_what_the_user_asked(two_cores) -> None:
    busy = threads.choose(sampler=FakeSampler([1.0]))
    assert busy.threads == 1 and not busy.pinned and "other processes use 1.0" in busy.why
    quiet = threads.choose(sampler=FakeSampler([0.0]))
    assert quiet.threads == 2
    pinned = threads.choose(3, sampler=FakeSampler([1.0]))
    assert (pinned.threads, pinned.pinned, pinned.why) == (3, True, "3 (--threads)")
    assert threads.choose(processes=2, sampler=FakeSampler([0.0])).threads == 1


def test_omp_num_threads_pins_the_count_like_threads(two_cores, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    choice = threads.choose(sampler=FakeSampler([0.0]))
    assert (choice.threads, choice.pinned, choice.why) == (1, True, "1 (OMP_NUM_THREADS)")


def _watch(readings: list[float | None], pinned: bool = False) -> tuple[threads.ThreadWatch, FakeClock, list[str]]:
    clock, said = FakeClock(), []
    choice = threads.ThreadChoice(2, "test", pinned, 2)
    torch.set_num_threads(2)
    return threads.ThreadWatch(choice, FakeSampler(readings), clock, said.append), clock, said


def _work(watch: threads.ThreadWatch, clock: FakeClock, seconds: float, per_batch: float = 0.25) -> None:
    """Batches of 32 images for ``seconds`` of the fake clock, each taking ``per_batch``."""
    for _ in range(round(seconds / per_batch)):
        clock.now += per_batch
        watch.tick(32, per_batch)


def test_the_watch_falls_back_when_another_process_starts_and_says_so_once(two_cores) -> None:
    watch, clock, said = _watch([0.0, 0.0, 1.2, 1.1, 0.9, 0.05])
    _work(watch, clock, 4.0)  # quiet: stays on 2
    assert torch.get_num_threads() == 2 and not said
    _work(watch, clock, 2.0)  # another training starts
    assert torch.get_num_threads() == 1 and watch.threads == 1
    _work(watch, clock, 4.0)  # still there: no second message
    assert len(said) == 1 and said[0].startswith("machine busy: other processes use 1.2 of 2 cores")
    _work(watch, clock, 2.0)  # it ended: back to both cores
    assert torch.get_num_threads() == 2 and said[-1].startswith("machine freer")
    assert [(c["from"], c["to"]) for c in watch.changes] == [(2, 1), (1, 2)]


def test_the_watch_falls_back_when_throughput_collapses_unseen(two_cores) -> None:
    watch, clock, said = _watch([None])  # CPU use cannot be read (some containers)
    _work(watch, clock, 6.0, per_batch=0.25)  # 128 images/s at its best
    assert watch.threads == 2
    _work(watch, clock, 2.0, per_batch=1.0)  # 32 images/s: the threads wait on each other
    assert watch.threads == 1 and "throughput fell to 25% of its best" in said[0]


def test_a_pinned_or_held_count_is_never_moved(two_cores) -> None:
    watch, clock, said = _watch([2.0], pinned=True)
    _work(watch, clock, 10.0)
    assert watch.threads == 2 and torch.get_num_threads() == 2 and not said
    watch, clock, said = _watch([0.0, 2.0])
    watch.hold(1)  # a tiny head trains on one thread whatever the load
    _work(watch, clock, 10.0)
    assert torch.get_num_threads() == 1 and not watch.changes
    watch.release()
    assert torch.get_num_threads() == 2


def _machine_busy() -> float:
    import psutil

    total = psutil.cpu_times()
    return (
        sum(total)
        - total.idle
        - getattr(total, "iowait", 0.0)
        - getattr(total, "guest", 0.0)
        - getattr(total, "guest_nice", 0.0)
    )


def test_the_sampler_sees_another_process() -> None:
    # Started through a shell that exits at once, so the spinner is no child of this process
    # (children count as this command's own work: decoding workers, compare's probes).
    pid = int(
        subprocess.run(
            ["sh", "-c", f"{sys.executable} -c 'while True: pass' >/dev/null 2>&1 & echo $!"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    try:
        time.sleep(0.2)
        sampler = threads.CpuSampler()
        time.sleep(0.6)
        assert sampler.others() >= 0.6  # most of one core (more if the machine is shared)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_the_sampler_does_not_count_this_process() -> None:
    sampler, busy_before = threads.CpuSampler(), _machine_busy()
    began, cpu_before = time.monotonic(), time.process_time()
    ended = cpu_before + 0.6
    while time.process_time() < ended:  # this process works (a whole core on an idle machine, less on a busy one)
        pass
    others = sampler.others()
    wall = time.monotonic() - began
    machine, own = (_machine_busy() - busy_before) / wall, (time.process_time() - cpu_before) / wall
    assert machine - others >= 0.7 * own  # this process's work is not "other processes'" (however busy the machine)


def test_the_sampler_counts_children_as_this_command_s_work() -> None:
    import psutil

    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        # Waiting for the child's CPU seconds, not a fixed time: on a busy machine it gets a fraction of a core.
        deadline = time.monotonic() + 60
        while sum(psutil.Process(child.pid).cpu_times()[:2]) < 0.5 and time.monotonic() < deadline:
            time.sleep(0.05)
        mine = sum(psutil.Process().cpu_times()[:2])  # this process alone, read first: it only grows
        reading = threads.CpuSampler._read()
    finally:
        child.kill()
        child.wait()
    # Against this process's own CPU time, not an earlier reading: a child an earlier test left in this
    # process (a figure drawer, a server) that ends in between takes its seconds out of the tree's sum.
    assert reading is not None
    assert reading[2] - mine >= 0.4


def test_a_training_run_moves_its_threads_when_the_machine_gets_busy(cli, tmp_path, monkeypatch, two_cores) -> None:
    """The watch is wired into training: a fake busy reading mid-run drops the count to 1, on record."""
    monkeypatch.setattr(threads, "CpuSampler", lambda: FakeSampler([0.0, 1.0]))
    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0.0)
    monkeypatch.setattr(threads, "CHECK_SECONDS", 0.0)
    code, _, err = cli(
        "train", "digits", "--model", "simple_cnn", "--epochs", "1", "--runs-dir", str(tmp_path), "--name", "busy"
    )
    assert code == 0, err
    attempt = json.loads((tmp_path / "busy" / "run.json").read_text())["attempts"][-1]
    assert attempt["threads"].startswith("2 (auto: 2 cores, other processes use 0.0")
    assert [(c["from"], c["to"]) for c in attempt["thread_changes"]] == [(2, 1)]
    assert "machine busy: other processes use 1.0 of 2 cores" in err


def test_the_first_look_begun_at_a_command_s_start_is_not_waited_for_again(monkeypatch) -> None:
    """cnnlab's CLI begins the look before its imports, which take longer than the look needs."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    waits: list[float] = []
    monkeypatch.setattr(threads.time, "sleep", waits.append)
    threads.choose()
    assert waits == [pytest.approx(threads.SAMPLE_SECONDS, abs=0.01)]  # no early look: all of it is waited for
    threads.look_early()
    began = time.monotonic()
    while time.monotonic() - began < threads.SAMPLE_SECONDS:  # the command's imports
        pass
    choice = threads.choose()
    assert waits[1] == 0.0 and "auto" in choice.why
    threads.choose()
    assert waits[2] == pytest.approx(threads.SAMPLE_SECONDS, abs=0.01)  # the early look is used once


def test_the_sampler_counts_children_that_ended_as_this_command_s_work() -> None:
    """Decoding workers end before training starts; their seconds are not another process's load."""
    before = threads.CpuSampler._read()
    subprocess.run(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"],
        check=True,
    )
    after = threads.CpuSampler._read()
    assert before is not None and after is not None
    assert after[2] - before[2] >= 0.45
