"""Work done in a forked process while this one goes on: e.g. a run's training figures drawn on the
second core while the first scores the test split.

Drawing figures is Python (matplotlib) holding the interpreter, so threads would take turns; a
forked process has the parent's data without copying or pickling it, and starts in milliseconds.
It is joined before anything reads what it writes, so a command never ends with it still running
(and it is a daemon: a parent that dies first takes it along). Where fork is not the platform's way
(macOS, Windows) or there is one core, the work runs in place, at ``join``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
from collections.abc import Callable

from cnnlab.threads import watch

log = logging.getLogger("cnnlab")
PATIENCE = 120.0  # seconds: a forked child that has not finished by then is stuck (a lock held at fork)


def _forkable() -> bool:
    return sys.platform == "linux" and (os.cpu_count() or 1) > 1


def _child(work: Callable[[], object]) -> None:
    """The forked side: one torch thread (the parent's pool does not survive a fork), then the work;
    a failure is a silent exit code, for the parent to do the work again where its error shows."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    try:
        work()
    except BaseException:  # noqa: BLE001  the parent redoes the work and reports its error
        raise SystemExit(1) from None


class Aside:
    """``work`` started in a forked process; :meth:`join` waits for it (or does it, if it could not run)."""

    def __init__(self, work: Callable[[], object], name: str) -> None:
        self.work, self.name = work, name
        self.process: mp.process.BaseProcess | None = None
        if _forkable():
            for stream in (sys.stdout, sys.stderr):  # else the child would write the parent's buffered text again
                stream.flush()
            try:
                self.process = mp.get_context("fork").Process(target=_child, args=(work,), name=name, daemon=True)
                self.process.start()
            except OSError as exc:  # process limits, no memory to fork: in place then
                log.debug("%s in this process: %s", name, exc)
                self.process = None
        # The child takes a core: OpenMP threads on the cores left, or each parallel region waits for
        # a descheduled thread (cnnlab.threads). Scoring 10,000 MNIST digits beside the training
        # figures: 1.1 s on two threads, 0.4 s on one. --threads (pinned) is the user's to keep.
        watching = watch() if self.process is not None else None
        self._watch = watching if watching is not None and not (watching.choice.pinned or watching.held) else None
        if self._watch is not None:
            self._watch.hold(max(1, self._watch.threads - 1))

    def join(self) -> None:
        """Returns once the work is done: waited for, or done here if the fork failed or could not run."""
        if self._watch is not None:
            self._watch.release()
            self._watch = None
        if self.process is not None:
            self.process.join(PATIENCE)
            if self.process.exitcode == 0:
                return
            if self.process.exitcode is None:  # forking a threaded process can leave a lock held for ever
                self.process.kill()
                self.process.join()
            log.debug("%s failed in its process (exit code %s): again here", self.name, self.process.exitcode)
        self.work()
