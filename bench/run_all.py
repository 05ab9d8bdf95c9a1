"""Runs every benchmark in bench/ in turn (each prints its table and writes bench/out/<name>.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = [
    "bench_augment.py",
    "bench_loader.py",
    "bench_mnist.py",
    "bench_cifar.py",
    "bench_transfer.py",
    "bench_augment_epoch.py",
    "bench_explain.py",
    "bench_compare.py",
    "bench_deploy.py",
    "bench_load.py",
]


def main() -> int:
    here = Path(__file__).parent
    failed = []
    for name in BENCHES:
        if not (here / name).is_file():
            continue
        print(f"\n=== {name} ===", flush=True)
        if subprocess.run([sys.executable, str(here / name)]).returncode != 0:
            failed.append(name)
    subprocess.run([sys.executable, str(here / "collect.py")])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
