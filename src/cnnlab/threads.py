"""How many CPU threads cnnlab computes on: one policy for every command, kept for the whole command.

Two processes that each run two OpenMP threads on two cores make every parallel region wait for
a descheduled thread: measured 4-37x slower and erratic, where a fair share of the machine would
be 2x (one thread: 2.3x, steady). So the policy is:

- **Threads**: the cores other processes leave free (``--threads N`` pins it). Other processes'
  use is measured as the machine's busy CPU time minus this process's (and its children's), so
  cnnlab's own threads never count as "busy", and a DDP sibling counts as the other process it is.
- **Kept under watch**: long phases (epochs, feature extraction, scoring, serving) call
  :meth:`ThreadWatch.tick`; every few seconds it measures again and moves the count down when
  another process starts (or throughput collapses) and back up when it ends, saying so once each.
- **OpenMP keeps its default wait policy** (a thread spins briefly before it sleeps): passive
  waiting measured 1.45x slower for EfficientNet-Lite0 at batch 1 on an idle machine (40.9 vs
  28.2 ms), and no wait setting won both idle and loaded (bench/out/omp_wait.md); under load the
  policy runs one thread, which waits on no other.
- **Inter-op threads: 1** (cnnlab forks no TorchScript tasks; a pool per core only competes).
- Decoding workers keep ``--workers``: each decodes its own files, no barrier waits on another.

Below every package, like ``cnnlab.machine``: torch and psutil are imported only when used.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cnnlab.errors import plural
from cnnlab.machine import usable_cores

log = logging.getLogger("cnnlab")

SAMPLE_SECONDS = 0.3  # the first look at the machine, before a command starts its work
CHECK_SECONDS = 2.0  # how often a long phase looks again: cheap (two /proc reads), and soon enough
# Other processes' use below this many cores is background (a shell, an editor, a daemon): a core
# is taken only when another process keeps more of it busy. A competing CPU-bound process shows
# at 0.6-1.0 core even while cnnlab's own threads hold both cores.
BACKGROUND_CORES = 0.35
COLLAPSE = 2.5  # throughput below 1/2.5 of its best at this thread count: the threads are waiting


class CpuSampler:
    """Cores other processes kept busy since the last reading (None where /proc cannot be read)."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        """(wall clock, the machine's busy CPU seconds, this process tree's CPU seconds)."""
        try:
            import psutil

            total = psutil.cpu_times()
            # Linux counts guest time inside user time already; steal is a core another VM took.
            busy = (
                sum(total)
                - total.idle
                - getattr(total, "iowait", 0.0)
                - getattr(total, "guest", 0.0)
                - getattr(total, "guest_nice", 0.0)
            )
            me = psutil.Process()
            times = me.cpu_times()
            # Children that ended (decoding workers) count in children_*: this command's work too.
            own = (
                times.user
                + times.system
                + getattr(times, "children_user", 0.0)
                + getattr(times, "children_system", 0.0)
            )
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # ended between listing and reading
                    own += sum(child.cpu_times()[:2])
            return time.monotonic(), busy, own
        except Exception:  # noqa: BLE001  no psutil or no /proc: the policy falls back to all cores
            return None

    def others(self) -> float | None:
        """Cores used by other processes since the previous call (or construction)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return None
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])


# A command's first look at the machine, begun at its start (see look_early) and taken by choose.
_early_look: tuple[CpuSampler, float] | None = None


def look_early() -> None:
    """Begins a command's first look at the machine now, at its start: its imports (seconds) then cover
    the :data:`SAMPLE_SECONDS` the look needs, where :func:`choose` would otherwise wait them out. The
    sampler counts this process's CPU time as its own, so the imports do not read as a busy machine."""
    global _early_look
    _early_look = (CpuSampler(), time.monotonic())


def _first_look() -> CpuSampler:
    """The sampler begun by :func:`look_early` (once), else a new one; at least SAMPLE_SECONDS old."""
    global _early_look
    sampler, began = _early_look or (CpuSampler(), time.monotonic())
    _early_look = None
    time.sleep(max(0.0, SAMPLE_SECONDS - (time.monotonic() - began)))
    return sampler


def threads_for(others: float | None, cores: int, share: int) -> int:
    """Threads for this process: the cores others leave free, at most its ``share``, at least 1."""
    if others is None:
        return share
    taken = max(0, math.ceil(others - BACKGROUND_CORES))
    return max(1, min(share, cores - taken))


def busy_while_timed(others: float | None) -> str | None:
    """Why timings taken while other processes used ``others`` cores are not to be trusted (None: quiet)."""
    if others is not None and others > BACKGROUND_CORES:
        return f"other processes kept {others:.1f} cores busy while it was timed"
    return None


@dataclass(frozen=True)
class ThreadChoice:
    """The thread count a command starts with, why, and whether it may change while it runs."""

    threads: int
    why: str
    pinned: bool  # --threads, or a deterministic run: never changed by the watch
    share: int  # this process's share of the cores (cores / processes on this machine)


def choose(
    requested: int = 0, processes: int = 1, keep_current: bool = False, sampler: CpuSampler | None = None
) -> ThreadChoice:
    """The thread count for a command: ``requested`` or ``OMP_NUM_THREADS`` if given, else the cores
    others leave free.

    Args:
        requested: ``--threads`` (0: decide by load).
        processes: cnnlab processes sharing this machine (DDP ranks per node).
        keep_current: keep torch's current count (a deterministic run: another count would change
            the float sums, so the same command would not give the same numbers twice).
        sampler: where other processes' use is read (tests pass a fake one).
    """
    import torch

    cores = usable_cores()
    share = max(1, cores // max(processes, 1))
    if requested:
        return ThreadChoice(requested, f"{requested} (--threads)", True, share)
    from_env = os.environ.get("OMP_NUM_THREADS", "")
    if from_env.isdigit() and int(from_env) > 0:  # the user's (or a launcher's, e.g. torchrun's) count
        return ThreadChoice(int(from_env), f"{from_env} (OMP_NUM_THREADS)", True, share)
    if keep_current:
        current = torch.get_num_threads()
        return ThreadChoice(
            current, f"{current} (torch's current count: --deterministic keeps it; --threads sets it)", True, share
        )
    if sampler is None:
        sampler = _first_look()
    others = sampler.others()
    threads = threads_for(others, cores, share)
    if others is None:
        return ThreadChoice(
            threads, f"{threads} (auto: {cores} cores; how busy they are cannot be read here)", False, share
        )
    shared = f", {processes} cnnlab processes" if processes > 1 else ""
    return ThreadChoice(
        threads,
        f"{threads} (auto: {cores} cores, other processes use {others:.1f}{shared}; re-checked every few seconds)",
        False,
        share,
    )


def apply(choice: ThreadChoice) -> ThreadChoice:
    """Sets torch's intra-op threads to the choice and its inter-op threads to 1 (where still possible)."""
    import torch

    torch.set_num_threads(choice.threads)
    with contextlib.suppress(RuntimeError):  # already set, or inter-op work already ran: it can be set only once
        torch.set_num_interop_threads(1)
    return choice


def set_up(requested: int = 0, processes: int = 1, keep_current: bool = False) -> ThreadChoice:
    """:func:`choose` then :func:`apply`, and the watch for this choice (see :func:`watch`)."""
    global _WATCH
    choice = apply(choose(requested, processes, keep_current))
    _WATCH = ThreadWatch(choice)
    return choice


class ThreadWatch:
    """Moves torch's thread count with the load while long phases run; says so once per direction.

    Two signals, looked at every :data:`CHECK_SECONDS` of wall time: other processes' CPU use (the
    cause), and the phase's throughput falling below 1/:data:`COLLAPSE` of its best at the current
    count (the effect, for machines whose CPU accounting cannot be read, e.g. some containers).
    """

    def __init__(
        self,
        choice: ThreadChoice,
        sampler: CpuSampler | None = None,
        clock: Callable[[], float] = time.monotonic,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.choice, self.threads = choice, choice.threads
        self._sampler = sampler
        self._clock = clock
        self._say = say or (lambda text: log.warning("%s", text))
        self._checked = clock()
        self._items, self._seconds = 0, 0.0  # work since the last check: images and the seconds they took
        self._best: dict[int, float] = {}  # images per second, per thread count, in this phase
        self.held = False
        self.said: set[str] = set()
        self.changes: list[dict[str, object]] = []  # for run.json: when it changed, from, to, why

    def hold(self, threads: int) -> None:
        """Pins ``threads`` until :meth:`release` (work whose best count is known, e.g. a tiny head)."""
        import torch

        self.held = True
        torch.set_num_threads(threads)

    def release(self) -> None:
        """Back to the watched count."""
        import torch

        self.held = False
        torch.set_num_threads(self.threads)

    def restart(self) -> None:
        """A new phase (an epoch's images are not a scoring pass's): throughput compares within one."""
        self._items, self._seconds = 0, 0.0
        self._best.clear()

    def tick(self, items: int, seconds: float) -> None:
        """After a unit of work (a batch of ``items`` images that took ``seconds``); cheap between checks."""
        if self.choice.pinned or self.held:
            return
        self._items += items
        self._seconds += seconds
        now = self._clock()
        if now - self._checked < CHECK_SECONDS:
            return
        self._checked = now
        if self._sampler is None:  # the first check opens the first window
            self._sampler = CpuSampler()
            return
        others = self._sampler.others()
        target = threads_for(others, usable_cores(), self.choice.share)
        why = f"other processes use {others:.1f} of {usable_cores()} cores" if others is not None else ""
        if self._seconds > 0 and self._items:
            rate, best = self._items / self._seconds, self._best.get(self.threads, 0.0)
            self._best[self.threads] = max(best, rate)
            if target >= self.threads > 1 and best and rate < best / COLLAPSE:
                target, why = 1, f"throughput fell to {rate / best:.0%} of its best"
        self._items, self._seconds = 0, 0.0
        if target != self.threads:
            self._switch(target, why)

    def _switch(self, target: int, why: str) -> None:
        import torch

        before, self.threads = self.threads, target
        torch.set_num_threads(target)
        self.changes.append({"at": time.strftime("%H:%M:%S"), "from": before, "to": target, "why": why})
        direction = "down" if target < before else "up"
        if direction not in self.said:
            self.said.add(direction)
            busy = "machine busy" if direction == "down" else "machine freer"
            self._say(
                f"{busy}: {why}; computing on {plural(target, 'thread')} "
                f"instead of {before} (--threads N pins the count)"
            )


# torch's thread count belongs to the process, and so does the watch that moves it: one per command.
_WATCH: ThreadWatch | None = None


def watch() -> ThreadWatch | None:
    """The watch of this command's choice (None before :func:`set_up`, e.g. a library call)."""
    return _WATCH


def for_command(requested: int = 0) -> int:
    """This command's thread count: ``requested`` (``--threads``, pinned) or the policy's (0).

    The first call of a command (or Python session) looks at the machine and sets the count; later
    calls with 0 keep what was chosen, and the watch moves it with the load from then on.
    """
    if _WATCH is None or (requested and (requested != _WATCH.threads or not _WATCH.choice.pinned)):
        set_up(requested)
    assert _WATCH is not None
    return _WATCH.threads


def tick(items: int, seconds: float) -> None:
    """:meth:`ThreadWatch.tick` on this command's watch, if there is one."""
    if _WATCH is not None:
        _WATCH.tick(items, seconds)


def new_phase() -> None:
    """:meth:`ThreadWatch.restart` on this command's watch, if there is one."""
    if _WATCH is not None:
        _WATCH.restart()
