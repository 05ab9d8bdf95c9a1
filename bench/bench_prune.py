"""Pruning a user can trust (issue #29): `cnnlab prune` on a transfer run, as a user types it.

    PYTHONPATH=src python bench/bench_prune.py PARENT_RUN [--workdir /tmp/bench-prune] [--variant NAME ...]

The parent run (e.g. an EfficientNet-Lite0 transfer run) is copied into the work folder once per
variant, so each command starts from the same untouched run; each variant is one whole command
(``python -m cnnlab prune COPY ...``). Figures per variant, from the pruned run's
``tables/prune.json`` and run.json: test and validation accuracy of the parent and the pruned
model, the epochs fine-tuned and when validation recovered, batch-1 latency of both timed side by
side in the same command and the speed-up, the warnings the command gave, its wall time and the
1-minute load average before and after it (the machine is shared: latency ratios, measured
interleaved, are the figures to trust). ``--collect`` reads variants already run in the work
folder instead of running them again.

Goal: ``prune --sparsity 0.5`` on a Lite0 transfer run loses <= 2 points and is >= 1.3x faster, or
the command says it could not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_page  # noqa: E402

VARIANTS = {
    "sparsity 0.5 (defaults)": ["--sparsity", "0.5"],
    "sparsity 0.5, the same share of every layer": ["--sparsity", "0.5", "--ranking", "layer"],
    "sparsity 0.5, fine-tuning up to 2400 s": ["--sparsity", "0.5", "--finetune-budget", "2400"],
    "sparsity 0.5, fine-tuning at 1e-4": ["--sparsity", "0.5", "--finetune-lr", "1e-4"],
    "sparsity 0.5, fine-tuning at 1e-3": ["--sparsity", "0.5", "--finetune-lr", "1e-3"],
    "max drop 2 (sweep)": ["--max-drop", "2"],
}
GOAL_DROP, GOAL_SPEEDUP = 2.0, 1.3


def slug(variant: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in variant).strip("-")


def run_variant(parent: Path, work: Path, variant: str) -> dict:
    """Copies the parent, runs the command on the copy, returns what it measured."""
    copy = work / slug(variant)
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(parent, copy, ignore=shutil.ignore_patterns("pruned"))
    command = [sys.executable, "-m", "cnnlab", "prune", str(copy), *VARIANTS[variant]]
    load_before, started = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds, load_after = time.perf_counter() - started, os.getloadavg()[0]
    (copy / "bench-prune.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"{variant}: exit {done.returncode}\n{done.stderr[-2000:]}")
    record = {
        "variant": variant,
        "command": "cnnlab prune RUN " + " ".join(VARIANTS[variant]),
        "seconds": seconds,
        "load_before": load_before,
        "load_after": load_after,
    }
    (copy / "bench-prune.json").write_text(json.dumps(record))
    return collect(copy, record)


def collect(copy: Path, record: dict) -> dict:
    """The kept pruned run's figures (the one whose before/after table the command printed last)."""
    tables = sorted((copy / "pruned").glob("*/tables/prune.json"), key=lambda p: p.stat().st_mtime)
    sweep = next(iter((copy / "pruned").glob("*/tables/prune_sweep.json")), None)
    kept = json.loads(sweep.read_text())["data"]["chosen"] if sweep else None
    chosen = [t for t in tables if kept is None or json.loads(t.read_text())["data"]["requested"] == kept]
    data = json.loads(chosen[-1].read_text())["data"]
    return {
        **record,
        **data,
        "run": chosen[-1].parent.parent.name,
        "sweep": json.loads(sweep.read_text())["data"] if sweep else None,
    }


def row(r: dict) -> str:
    drop = 100 * (r["parent_test_accuracy"] - r["final_accuracy"])
    recovered = f"epoch {r['recovered_at_epoch']}" if r.get("recovered_at_epoch") else "no"
    warned = "; ".join(r.get("warnings") or []) or "none"
    return (
        f"| {r['variant']} | `{r['command']}` | {r['run']} | {100 * r['parent_test_accuracy']:.2f}% -> "
        f"{100 * r['accuracy_before_finetune']:.2f}% -> {100 * r['final_accuracy']:.2f}% ({-drop:+.2f}) | "
        f"{100 * r['parent_val_accuracy']:.0f}% -> {100 * r['val_accuracy']:.0f}% | {r['finetune_epochs']} "
        f"({recovered}) | {r['parent_ms']:.1f} -> {r['pruned_ms']:.1f} ms ({r['speedup_batch1']:.2f}x) | "
        f"{r['params']:,} of {r['parent_params']:,} | {r['seconds']:.0f} s | {r['load_before']:.1f} / "
        f"{r['load_after']:.1f} | {warned} |"
    )


def goal_line(r: dict) -> str:
    drop = 100 * (r["parent_test_accuracy"] - r["final_accuracy"])
    met = drop <= GOAL_DROP and r["speedup_batch1"] >= GOAL_SPEEDUP
    said = bool(r.get("warnings"))
    verdict = "**met**" if met else ("**missed, and the command said so**" if said else "**missed, unsaid**")
    return (
        f"- {r['variant']}: {drop:.2f} points lost, {r['speedup_batch1']:.2f}x at batch 1 "
        f"(goal <= {GOAL_DROP:g} points and >= {GOAL_SPEEDUP:g}x, or a warning): {verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("parent", type=Path)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-prune"))
    parser.add_argument("--variant", action="append", choices=list(VARIANTS))
    parser.add_argument("--collect", action="store_true", help="read the variants already run in --workdir")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for variant in args.variant or list(VARIANTS):
        copy = args.workdir / slug(variant)
        if args.collect:
            results.append(collect(copy, json.loads((copy / "bench-prune.json").read_text())))
        else:
            results.append(run_variant(args.parent, args.workdir, variant))
    body = [
        "**Goal** (issue #29):",
        "",
        *map(goal_line, results),
        "",
        (
            "| variant | command | pruned run | test accuracy: parent -> pruned -> fine-tuned | val accuracy | "
            "epochs fine-tuned (recovered) | batch-1 latency, side by side | non-zero params | wall time | "
            "load before / after | warnings |"
        ),
        "|" + "---|" * 11,
        *map(row, results),
    ]
    for r in results:
        if r["sweep"]:
            points = r["sweep"]["points"]
            body += [
                "",
                f"Sweep of `{r['command']}` (chosen on validation: {r['sweep']['chosen']:.0%}):",
                "",
                "| sparsity | val accuracy | test accuracy | batch-1 ms | speed-up |",
                "|---|---|---|---|---|",
                *(
                    f"| {p['requested']:.0%} | {100 * p['val_accuracy']:.0f}% | {100 * p['final_accuracy']:.2f}% | "
                    f"{p['pruned_ms']:.1f} | {p['speedup_batch1']:.2f}x |"
                    for p in points
                ),
            ]
    how = " ".join(
        [
            "PYTHONPATH=src python bench/bench_prune.py",
            str(args.parent),
            "--workdir",
            str(args.workdir),
            *(f"--variant '{v}'" for v in args.variant or []),
            *(["--collect"] if args.collect else []),
        ]
    )
    collected = " Collected (--collect) from the folders the commands wrote." if args.collect else ""
    write_page(
        "prune",
        "Pruning a Lite0 transfer run",
        how,
        f"Parent: {args.parent.name} (copied per variant).{collected} Each variant is one `cnnlab prune` command; "
        "latencies are PyTorch eager at batch 1, the parent and the pruned model timed interleaved in the same "
        "command. The machine is shared with other jobs (load averages in the table).",
        body,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
