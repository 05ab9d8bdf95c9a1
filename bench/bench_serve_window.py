"""Serving: the batching window, 5 ms vs 0 ms vs batching off, MNIST simple_cnn in PyTorch, 16 clients.

    PYTHONPATH=src python bench/bench_serve_window.py --workdir WORKDIR   # after bench_serve.py: its run

The MNIST CNN scores a batch of 8 2.4x faster per image than single images, yet batching did not
raise requests/s in bench_serve.py. This asks whether the window (how long an idle batcher waits
for company) is the cost: three servers side by side, interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "serve"))

from bench_serve import CLIENTS, _first_image, burst  # noqa: E402
from common import write_page  # noqa: E402
from servers import multipart, start_server  # noqa: E402

VARIANTS = {"on, 5 ms window": ("on", "5"), "on, 0 ms window": ("on", "0"), "off": ("off", "0")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="bench_serve.py's --workdir (its MNIST run)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    run = args.workdir / "runs" / "mnist"
    digit = _first_image(Path("/work/scratch/data/mnist"), "mnist", "test/7")
    body, kind = multipart([(digit.name, digit.read_bytes())])
    servers = {
        name: start_server(run, "--runtime", "pytorch", "--batching", batching, "--batch-window-ms", window)
        for name, (batching, window) in VARIANTS.items()
    }
    results: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    try:
        for server in servers.values():
            burst(server, body, kind, CLIENTS * 4)
        for number in range(args.rounds):
            for name in names[number % 3 :] + names[: number % 3]:
                results[name].append(burst(servers[name], body, kind, CLIENTS * 60))
                print(number, name, results[name][-1], flush=True)
    finally:
        for server in servers.values():
            server.stop(wait=False)
    off = statistics.median(r["req_s"] for r in results["off"])
    rows = [
        "| batching | req/s | p50 ms | p99 ms | mean images per call | errors | req/s vs off |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in results.items():
        m = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        rows.append(
            f"| {name} | {m['req_s']:.0f} | {m['p50']:.0f} | {m['p99']:.0f} | {m['batch']:.1f} | "
            f"{sum(r['errors'] for r in rs):.0f} | {m['req_s'] / off:.2f}x |"
        )
    write_page(
        "serve_window",
        "Serving: the batching window",
        "PYTHONPATH=src python bench/bench_serve_window.py --workdir WORKDIR",
        f"MNIST simple_cnn in PyTorch eager, 16 clients, {CLIENTS * 60} requests of one 28 px PNG per round, "
        f"{args.rounds} interleaved rounds, medians. The server is bound by HTTP handling here (about 300 "
        "requests/s on the 2 cores whatever the runtime, against about 1 ms of inference per image alone, 0.4 ms in a batch: bench/out/serve.md), so waiting for company costs more than the "
        "batch saves; with no window, requests that queued while the model ran are still batched. "
        "Hence `--batch-window-ms` defaults to 0.",
        rows,
    )


if __name__ == "__main__":
    main()
