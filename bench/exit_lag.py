"""How long a command's process lingers after its last line of output (issue #32: under 1 s).

    python bench/exit_lag.py cnnlab train CIFAR10 --recipe fast-cifar --time-budget 30

Prints the command's last lines, its wall time and the seconds from its last line to its exit.
"""

from __future__ import annotations

import subprocess
import sys
import time


def main(argv: list[str]) -> int:
    if not argv:
        raise SystemExit(__doc__)
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    lines, last_line = [], started
    for line in process.stdout:
        lines.append(line.rstrip())
        last_line = time.perf_counter()
    process.wait()
    ended = time.perf_counter()
    print("\n".join(lines[-3:]))
    print(f"whole command {ended - started:.2f} s; the process ended {ended - last_line:.2f} s after its last line")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
