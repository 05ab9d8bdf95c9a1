"""What machine a measurement ran on: the one place that names the CPU, for info, compare and bench.

Like ``cnnlab.io``, this module sits below every package; torch is imported only when asked.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what the platform says."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's or SLURM's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not offered on every system
        return max(1, os.cpu_count() or 1)


BUSY_SAMPLE_SECONDS = 0.25


def busy_cores(seconds: float = BUSY_SAMPLE_SECONDS) -> float | None:
    """How many of the machine's cores other work keeps busy now, sampled over ``seconds``.

    A short sample rather than the load average: the 1-minute average still holds a command that
    ended seconds ago, so back-to-back runs would each see a busy machine that is idle.
    """
    try:
        import psutil

        return psutil.cpu_percent(interval=seconds) / 100.0 * (psutil.cpu_count() or usable_cores())
    except Exception:  # noqa: BLE001  no psutil or no /proc: fall back to the load average
        try:
            return os.getloadavg()[0]
        except OSError:
            return None


def auto_threads(processes: int = 1) -> tuple[int, str]:
    """Torch threads for CPU work: the cores other work leaves free now, split between ``processes``.

    Measured on this 2-core machine: with both cores free, 2 threads train small CNNs faster than 1;
    with other jobs on them, a second thread made training 2.8x slower (digits, simple_cnn: 14.6 s
    vs 5.2 s), as the threads wait on each other. Returns the count and why, for run.json.
    """
    cores = max(1, usable_cores() // max(processes, 1))
    busy = busy_cores()
    if busy is None:
        return cores, f"{cores} (all {cores} cores: how busy they are cannot be read here)"
    free = usable_cores() - busy
    threads = max(1, min(cores, round(free)))
    return threads, (f"{threads} (auto: {usable_cores()} cores, {busy:.1f} busy with other work, "
                     f"{max(free, 0):.1f} free{'' if processes == 1 else f', shared by {processes} processes'})")


def machine_line(threads: int | None = None) -> str:
    """One line: CPU, cores, torch version and threads, load average now (timings depend on all)."""
    import torch

    threads = threads or torch.get_num_threads()
    try:
        load = "; load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # not offered on every system
        load = ""
    return (f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {threads} intra-op "
            f"thread{'s' if threads != 1 else ''}{load}")


def status_kib(field: str) -> int | None:
    """A ``/proc/self/status`` memory field (VmRSS, VmHWM, RssFile) in KiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_rss_bytes() -> int | None:
    """This process's peak resident memory so far (``getrusage``'s ru_maxrss); None where unknown."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB elsewhere
