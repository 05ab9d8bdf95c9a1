"""What machine a measurement ran on: the one place that names the CPU, for info, compare and bench.

Like ``cnnlab.io``, this module sits below every package; torch is imported only when asked.
"""

from __future__ import annotations

import os
import platform


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
