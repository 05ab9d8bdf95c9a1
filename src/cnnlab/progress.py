"""Progress of anything slow: a Rich bar on a terminal, one plain line per phase in logs and pipes.

Like ``cnnlab.io``, this module sits below every package. Rich is imported only when a bar is
shown, so quick commands do not pay for it.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

Listener = Callable[[int, int, float], None]  # (done, total, seconds so far)


def in_notebook() -> bool:
    """Whether we run in a Jupyter kernel (its output is not a terminal, but it can show widgets)."""
    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ipython is not None and type(ipython).__name__ == "ZMQInteractiveShell"


class Progress:
    """Counts ``total`` items of one phase, e.g. ``with Progress("decoding", 3000) as p: p.advance(64)``.

    Args:
        description: what is being done, e.g. "extracting features".
        total: how many items the phase has.
        unit: what an item is, for the closing line.
        listener: called after every advance with (done, total, seconds), e.g. to estimate the end.
        quiet_below: phases shorter than this many seconds print nothing (no noise for quick work).
    """

    def __init__(
        self,
        description: str,
        total: int,
        unit: str = "images",
        listener: Listener | None = None,
        quiet_below: float = 2.0,
    ) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.listener, self.quiet_below = listener, quiet_below
        self.done = 0
        self._lock = threading.Lock()  # decoding threads advance it concurrently
        self._start = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if sys.stderr.isatty() and self.total > 0:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeRemainingColumn

            self._bar = Bar(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
            self._task = self._bar.add_task(self.description, total=self.total)
        return self

    def advance(self, count: int) -> None:
        with self._lock:
            self.done += count
            done = self.done
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        if self.listener is not None:
            self.listener(done, self.total, self.seconds)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        if kind is None and self.seconds >= self.quiet_below:
            print(f"{self.description}: {self.done:,} {self.unit} in {self.seconds:.1f} s", flush=True)
