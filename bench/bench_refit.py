"""Refit on train + val (issue #29): the default transfer command with ``--refit off`` vs ``on``.

    PYTHONPATH=src python bench/bench_refit.py DATA [DATA ...] --out-runs /tmp/refit [--seeds 0 1]

For each photo folder (``train/<class>/``, ``test/<class>/``) and seed, the command a user types,
``cnnlab train DATA --model efficientnet_lite0 --pretrained --seed S``, with ``--refit off``
(validation's model, as before the refit) and ``--refit on`` (the same stages, then trained again on
train + val for the epochs validation chose), one after the other, the order alternating. Figures
from run.json and metrics.json: the final model's test accuracy, the validated model's (the refit
run scores it before refitting: it should equal the off run's), the epochs refit, the refit's own
seconds and the whole command's wall time. ``uptime`` is recorded before and after: the machine is
shared with other jobs, so times are indicative, accuracies are not affected.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CNNLAB_TRAIN, write_page  # noqa: E402

BASE = ["--model", "efficientnet_lite0", "--pretrained"]
MODES = ("off", "on")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_one(folder: Path, mode: str, seed: int, runs: Path) -> dict:
    """One whole command; its figures (reused when ``<name>.result.json`` exists)."""
    name = f"{folder.name}-s{seed}-refit-{mode}"
    saved = runs / f"{name}.result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    command = [
        *CNNLAB_TRAIN,
        str(folder),
        *BASE,
        "--seed",
        str(seed),
        "--refit",
        mode,
        "--runs-dir",
        str(runs),
        "--name",
        name,
    ]
    load, started = os.getloadavg()[0], time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    (runs / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    meta = json.loads((runs / name / "run.json").read_text())
    metrics = json.loads((runs / name / "metrics.json").read_text())
    splits, refit = meta["data"]["splits"], meta.get("refit") or {}
    stages = meta["stages"]
    kept = (meta.get("kept") or {}).get("stage", stages[0]["name"])
    result = {
        "data": folder.name,
        "seed": seed,
        "mode": mode,
        "train": splits["train"]["count"],
        "val": splits["val"]["count"],
        "test_images": splits["test"]["count"],
        "test": metrics["test"]["accuracy"],
        "validated": next(s["test_acc"] for s in stages if s["name"] == kept) if refit.get("done") else None,
        "epochs": [c["epochs"] for c in refit.get("chosen", [])],
        "refit_seconds": refit.get("seconds"),
        "kept": kept,
        "wall": wall,
        "load": load,
    }
    saved.write_text(json.dumps(result))
    print(f"{name}: test {100 * result['test']:.2f}%  wall {wall:.0f} s  load {load:.1f}", flush=True)
    return result


def page(results: list[dict], args: argparse.Namespace, loads: list[str]) -> None:
    header = (
        "| data (train / val / test) | seed | refit | test accuracy | validated model's test | "
        "epochs refit (stage 1, 2) | refit s | whole command | load at start |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        validated = "—" if r["validated"] is None else f"{100 * r['validated']:.2f}%"
        epochs = ", ".join(map(str, r["epochs"])) or "—"
        refit_s = "—" if r["refit_seconds"] is None else f"{r['refit_seconds']:.0f}"
        rows.append(
            f"| {r['data']} ({r['train']} / {r['val']} / {r['test_images']}) | {r['seed']} | {r['mode']} | "
            f"{100 * r['test']:.2f}% | {validated} | {epochs} | {refit_s} | {r['wall'] / 60:.1f} min | "
            f"{r['load']:.1f} |"
        )
    rows += ["", "Change with the refit (on minus off, same seed), in test images:", ""]
    for (data, seed), pair in _pairs(results).items():
        off, on = pair["off"], pair["on"]
        images = round((on["test"] - off["test"]) * on["test_images"])
        rows.append(
            f"* {data}, seed {seed}: {100 * (on['test'] - off['test']):+.2f} points ({images:+d} of "
            f"{on['test_images']} test images); whole command {on['wall'] / off['wall']:.2f}x the time"
        )
    rows += ["", *(f"`uptime` {when}: {line}  " for when, line in zip(("before", "after"), loads))]
    intro = (
        "Each row is one whole command (decoding, stages, refit, evaluation, report) at 224 px on today's code; "
        "test accuracy never chooses anything. The validated model's test accuracy is the one the refit run "
        "scored before refitting. On a test split of a few hundred images one image is 0.3-0.7 points: a "
        "difference of an image or two is noise, and so is the difference between two runs of the same "
        "command (without --deterministic the thread count follows the machine's load): compare each refit "
        "with its own run's validated model too. The machine was shared with other jobs (load above): times "
        f"are indicative. {args.note}"
    )
    command = args.command or (
        "PYTHONPATH=src python bench/bench_refit.py "
        + " ".join(map(str, args.data))
        + " --seeds "
        + " ".join(map(str, args.seeds))
    )
    write_page("refit", "Refit on train + val (issue #29)", command, intro, rows)


def _pairs(results: list[dict]) -> dict[tuple[str, int], dict[str, dict]]:
    pairs: dict[tuple[str, int], dict[str, dict]] = {}
    for r in results:
        pairs.setdefault((r["data"], r["seed"]), {})[r["mode"]] = r
    return {key: pair for key, pair in pairs.items() if len(pair) == 2}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path)
    p.add_argument("--out-runs", type=Path, required=True, help="folder for the run folders and logs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--note", default="", help="a line about the data (e.g. which subsets)")
    p.add_argument("--command", help="the page's command line, when the runs took several invocations")
    args = p.parse_args()
    args.out_runs.mkdir(parents=True, exist_ok=True)
    loads, results = [uptime()], []
    for index, folder in enumerate(args.data):
        for seed in args.seeds:
            order = MODES if (index + seed) % 2 == 0 else MODES[::-1]
            results.extend(run_one(folder, mode, seed, args.out_runs) for mode in order)
            page(results, args, [*loads, uptime()])  # a partial table survives an interrupted run
    page(results, args, [*loads, uptime()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
