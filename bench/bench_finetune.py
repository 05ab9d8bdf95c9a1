"""Transfer II (issue #20): what stage 2 adds, before and after, as whole `cnnlab train` commands.

    PYTHONPATH=src python bench/bench_finetune.py DATA [DATA ...] --out-runs /tmp/ft

For each photo folder (``train/<class>/``, ``test/<class>/``) it runs, one after the other, the
command a user types, ``cnnlab train DATA --model efficientnet_lite0 --pretrained``:

* ``before``: the previous defaults given as flags (stage 2 chosen, and kept, on validation loss);
* ``after``: today's defaults (no flags: chosen and kept on validation accuracy, with a margin).

Both on today's code. Figures per run, from run.json: stage-1 and final test accuracy, the gain,
validation images right (stage 1, stage 2's best epoch), which stage's weights were kept; the
whole command's wall and CPU time (this process's children) per 1,000 training images, and the
1-minute load average when it started. The variants alternate order from one folder to the next.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CNNLAB_TRAIN, write_page  # noqa: E402

BASE = ["--model", "efficientnet_lite0", "--pretrained"]
# "issue start": stage 2 as it was when issue #20 was filed (the lesson's 10 layers at 1e-5 on
# plateau, 3 epochs, 10% validation, kept on validation loss); "before": the previous defaults
# (chosen and kept on loss); "after": today's defaults; "after, light": with --augment light in
# both stages (stage 2 then trains on images: augmentation turns the activation cache off).
VARIANTS = {
    "issue start": [
        "--finetune-layers",
        "10",
        "--finetune-lr",
        "1e-5",
        "--finetune-scheduler",
        "plateau",
        "--finetune-epochs",
        "3",
        "--val-split",
        "0.1",
        "--finetune-select",
        "loss",
    ],
    "before": ["--finetune-select", "loss"],
    "after": [],
    "after, light": ["--augment", "light"],
}


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def right(stage: dict) -> str:
    """'86/100': validation images right at the stage's own best epoch."""
    best = stage.get("val_at_best") or {}
    return f"{best['images'] - best['errors']}/{best['images']}" if best else "?"


def run_one(folder: Path, variant: str, runs: Path) -> dict:
    name = f"{folder.name}-{variant.replace(', ', '-').replace(' ', '')}"
    command = [*CNNLAB_TRAIN, str(folder), *BASE, *VARIANTS[variant], "--runs-dir", str(runs), "--name", name]
    load = os.getloadavg()[0]
    cpu, started = children_cpu(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, children_cpu() - cpu
    (runs / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    meta = json.loads((runs / name / "run.json").read_text())
    stages = meta["stages"]
    train_images = meta["data"]["splits"]["train"]["count"] + meta["data"]["splits"]["val"]["count"]
    result = {
        "data": folder.name,
        "variant": variant,
        "train_images": train_images,
        "val_images": meta["data"]["splits"]["val"]["count"],
        "test_images": meta["data"]["splits"]["test"]["count"],
        "stage1": stages[0]["test_acc"],
        "final": stages[-1]["test_acc"],
        "kept": (meta.get("kept") or {}).get("stage", stages[-1]["name"]),
        "val_right": [right(stage) for stage in stages],
        "stage2_seconds": stages[-1]["seconds"] if len(stages) > 1 else 0.0,
        "wall": wall,
        "cpu": cpu,
        "load": load,
    }
    print(
        f"{name}: stage 1 {100 * result['stage1']:.2f}%  final {100 * result['final']:.2f}%  "
        f"kept {result['kept']}  {wall:.0f} s wall ({1000 * wall / train_images:.0f} s per 1,000 images), "
        f"load {load:.1f}",
        flush=True,
    )
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", nargs="+", type=Path)
    p.add_argument("--out-runs", type=Path, required=True, help="folder for the run folders and logs")
    p.add_argument("--note", default="", help="a line about the data (e.g. which subsets)")
    p.add_argument("--page-only", action="store_true", help="rewrite the page from OUT_RUNS/finetune.json")
    p.add_argument("--variants", nargs="+", default=["issue start", "after"], choices=list(VARIANTS))
    p.add_argument("--append", action="store_true", help="add to OUT_RUNS/finetune.json's runs")
    p.add_argument("--command", help="the page's command line, when the runs took several invocations")
    args = p.parse_args()
    args.out_runs.mkdir(parents=True, exist_ok=True)
    if args.page_only:
        page(json.loads((args.out_runs / "finetune.json").read_text()), args)
        return 0
    saved = args.out_runs / "finetune.json"
    results: list[dict] = json.loads(saved.read_text()) if args.append and saved.is_file() else []
    for index, folder in enumerate(args.data):
        order = args.variants if index % 2 == 0 else args.variants[::-1]
        results.extend(run_one(folder, variant, args.out_runs) for variant in order)
        saved.write_text(json.dumps(results, indent=1))
        page(results, args)  # after each folder: a partial table survives an interrupted run
    return 0


def page(results: list[dict], args: argparse.Namespace) -> None:
    rows = [
        "| data (train+val / test images) | variant | stage 1 test | final test | gain | validation right "
        "(stage 1 / 2) | weights kept | stage 2 s | whole command | per 1,000 training images (wall / CPU) | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: index for index, name in enumerate(dict.fromkeys(r["data"] for r in results))}
    for r in sorted(results, key=lambda r: (order[r["data"]], list(VARIANTS).index(r["variant"]))):
        per = 1000 / r["train_images"]
        rows.append(
            f"| {r['data']} ({r['train_images']} / {r['test_images']}) | {r['variant']} | "
            f"{100 * r['stage1']:.2f}% | {100 * r['final']:.2f}% | {100 * (r['final'] - r['stage1']):+.2f} | "
            f"{' / '.join(r.get('val_right', []))} | {r['kept']} | {r['stage2_seconds']:.0f} | {r['wall'] / 60:.1f} min | "
            f"{r['wall'] * per / 60:.1f} / {r['cpu'] * per / 60:.1f} min | {r['load']:.1f} |"
        )
    rows += [
        "",
        "Goals (issue #20), `after` rows (today's defaults): +1.5 points where stage 1 is below 95%, never a loss, at most "
        "3 min per 1,000 training images (whole command):",
        "",
    ]
    for r in (r for r in results if r["variant"].startswith("after")):
        gain, minutes = 100 * (r["final"] - r["stage1"]), r["wall"] * 1000 / r["train_images"] / 60
        cpu = r["cpu"] * 1000 / r["train_images"] / 60
        aim = "+1.5 points" if r["stage1"] < 0.95 else "no loss"
        met = gain >= 1.5 if r["stage1"] < 0.95 else gain >= 0
        rows.append(
            f"* {r['data']} ({r['variant']}): {gain:+.2f} points ({aim}: {'met' if met else 'missed'}), {minutes:.1f} min per "
            f"1,000 training images ({'met' if minutes <= 3 else f'missed by {minutes - 3:.1f} min'}) "
            f"at load {r['load']:.1f}; CPU {cpu:.1f} min per 1,000"
        )
    shown = sorted({r["variant"] for r in results}, key=list(VARIANTS).index)
    described = {
        "issue start": "stage 2 as when issue #20 was filed (`" + " ".join(VARIANTS["issue start"]) + "`: the "
        "lesson's last 10 layers at 1e-5 on plateau, 3 epochs, 10% validation, kept on validation loss)",
        "before": "the previous defaults (`--finetune-select loss`: stage 2's epoch chosen, and kept, on validation loss)",
        "after": "today's defaults, no flags (the last 3 blocks, one-cycle to a peak of 1e-4, 5 epochs, on cached "
        "activations, `--val-split auto`; chosen and kept on validation accuracy: more than one more "
        "validation image right, or one more with a lower loss)",
        "after, light": "today's defaults with `--augment light` (flips and shifts in both stages; stage 2 then "
        "trains on images, not cached activations)",
    }
    intro = (
        "; ".join(f"`{name}` = {described[name]}" for name in shown) + ". Each is `cnnlab train DATA --model "
        "efficientnet_lite0 --pretrained [flags]` at 224 px, a whole command (decoding, both stages, evaluation "
        "and report), one after the other on the same code. Test accuracy is never used to choose. "
        f"{args.note}"
    )
    command = "PYTHONPATH=src python bench/bench_finetune.py " + " ".join(str(d) for d in args.data)
    if shown != ["issue start", "after"]:
        command += f" --variants {' '.join(repr(v) for v in shown)}"
    command = args.command or command
    write_page("finetune", "Fine-tuning that pays for itself (issue #20)", command, intro, rows)


if __name__ == "__main__":
    sys.exit(main())
