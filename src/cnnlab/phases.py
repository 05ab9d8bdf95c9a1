"""Where a command's time goes: named phases, timed as they run, printed in one line at the end.

A run's phases (start-up, data, model, training, evaluation, figures, report) are spread over
several layers, so they are recorded here, below all of them, in one per-process record that a
command resets when it starts (``begin``). ``run.json`` keeps each attempt's (a run stopped and
resumed has several) under ``attempts[i].phases``, and their sum under ``timing.phases``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

_phases: dict[str, float] = {}
_begun = time.perf_counter()
_active = False
_before = 0.0  # seconds the process ran before ``begin`` (interpreter start, first imports)
_startup_counted = False  # only the first command of a process paid for its start-up


def process_seconds() -> float | None:
    """Seconds since this process started (interpreter start-up and imports included), if known.

    On Linux both ends are read on the boot clock (/proc/self/stat's start tick, /proc/uptime):
    psutil's create_time is a wall-clock time, and subtracting it from ``time.time()`` was off by
    up to half a minute on a virtual machine whose wall clock was being corrected.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as stat, open("/proc/uptime", encoding="ascii") as uptime:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
            return max(0.0, float(uptime.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process(os.getpid()).create_time())
    except Exception:  # noqa: BLE001  psutil missing or the platform hides it: start-up is then unknown
        return None


def begin(with_startup: bool = False) -> None:
    """Starts a command's record; ``with_startup`` (the command line): what the process spent before
    it (interpreter start, imports) is its first phase, once per process."""
    global _begun, _active, _startup_counted, _before
    _phases.clear()
    _begun, _active, _before = time.perf_counter(), True, 0.0
    if with_startup and not _startup_counted:
        _startup_counted = True
        _before = process_seconds() or 0.0
        _phases["start-up"] = _before


def begin_unless_active() -> None:
    """Begins a record when no command began one (a run started from Python)."""
    if not _active:
        begin()


def end() -> None:
    """Closes the record: the next run begins its own."""
    global _active
    _active = False


@contextmanager
def recording() -> Iterator[None]:
    """A record for a run made inside another command (a pruned copy, a distilled student), so its
    run.json and report say where its time went: begun unless one is active, then ended if begun here."""
    began_here = not _active
    begin_unless_active()
    try:
        yield
    finally:
        if began_here:
            end()


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Adds the time spent in the block to phase ``name`` (phases entered twice add up)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        _phases[name] = _phases.get(name, 0.0) + time.perf_counter() - start


def recorded() -> dict[str, float]:
    """The phases so far, in the order they were first entered, in seconds (rounded to 0.01 s)."""
    return {name: round(seconds, 2) for name, seconds in _phases.items()}


def total_seconds() -> float:
    """Since ``begin``, plus the process's time before it when that is counted."""
    return round(time.perf_counter() - _begun + _before, 2)


def attempt_record() -> dict[str, Any]:
    """This command's time so far, for its attempt's entry in run.json (``attempts[i]``): its phases
    and total; {} when no command began a record (nothing true to say)."""
    return {"phases": recorded(), "total_seconds": total_seconds()} if _active else {}


def across_attempts(attempts: Iterable[Any]) -> dict[str, Any]:
    """``timing.phases`` and ``timing.total_seconds`` of a run stopped and resumed: every attempt's
    record summed (phases in the order first entered), as its training time counts every attempt's work.
    {} when no attempt has a record (a run from before attempts kept theirs)."""
    totals: dict[str, float] = {}
    total, counted = 0.0, False
    for attempt in attempts:
        if not isinstance(attempt, dict) or not isinstance(attempt.get("phases"), dict):
            continue
        counted = True
        for name, seconds in attempt["phases"].items():
            totals[name] = totals.get(name, 0.0) + float(seconds)
        total += float(attempt.get("total_seconds") or sum(attempt["phases"].values()))
    if not counted:
        return {}
    return {"phases": {name: round(seconds, 2) for name, seconds in totals.items()}, "total_seconds": round(total, 2)}


def phase_line(phases: dict[str, float], total: float | None = None) -> str:
    """``time: start-up 1.9 s · data 1.2 s · training 9.8 s · ... · total 14.0 s``"""
    parts = [f"{name} {seconds:.1f} s" for name, seconds in phases.items()]
    if total is not None:
        parts.append(f"total {total:.1f} s")
    return "time: " + " · ".join(parts)
