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


def machine_line(threads: int | None = None) -> str:
    """One line: CPU, cores, torch version and threads, load average now (timings depend on all)."""
    import torch

    threads = threads or torch.get_num_threads()
    try:
        load = "; load average " + ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # not offered on every system
        load = ""
    return (
        f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {threads} intra-op "
        f"thread{'s' if threads != 1 else ''}{load}"
    )


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
