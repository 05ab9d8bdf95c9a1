"""The centre crop against the whole photo (issue #29): test accuracy of --crop-mode center and squash.

    PYTHONPATH=src python bench/bench_crop_mode.py DATA [DATA ...] --out-runs /tmp/crop-mode [--seeds 0 1]

Per folder and seed: the whole command a user types, ``cnnlab train DATA --model efficientnet_lite0
--pretrained --crop-mode MODE --seed S``, for MODE center (the default: shorter side fitted, the long
side's ends cut) and squash (the whole photo resized to the square); the order alternates from one
run to the next. Both keep the model's crop_pct (0.875): the model sees the centre of the stored
square either way, as timm's evaluation does. ``--variants`` adds ``whole`` (squash with
``--crop-pct 1``: every pixel of the photo, no margin) and ``border`` (the whole photo padded with the
model's mean). Accuracy only: runs share the machine with other jobs (``nice -n 19``), so no time is
reported. A folder whose photos are all square decodes to the same pixels in every mode (checked here
on its files): it is listed, not trained. A run already done
(``<run>.result.json`` in ``--out-runs``) is reused; ``--page-only`` writes the page from those.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_page

from cnnlab.data.crop import stored_side
from cnnlab.data.decode import Fit, probe_image
from cnnlab.data.discover import discover
from cnnlab.data.folder import decode_files

BASE = ["--model", "efficientnet_lite0", "--pretrained"]
VARIANTS = {  # name -> the flags it adds to BASE
    "center": ["--crop-mode", "center"],
    "squash": ["--crop-mode", "squash"],
    "whole": ["--crop-mode", "squash", "--crop-pct", "1"],
    "border": ["--crop-mode", "border"],
}
TITLES = {"center": "center", "squash": "squash", "whole": "squash, --crop-pct 1", "border": "border"}
SIDE, CROP_PCT = 224, 0.875  # efficientnet_lite0's input and timm's crop_pct for it


def files_of(folder: Path) -> list[Path]:
    return [path for split in discover(folder).files.values() for path, _ in split]


def not_square(folder: Path) -> tuple[int, int]:
    """(photos whose sides differ, photos) of ``folder``, from the headers."""
    files = files_of(folder)
    return sum(info.width != info.height for info in map(probe_image, files)), len(files)


def same_pixels(folder: Path) -> bool:
    """Whether center, squash and border decode every file of ``folder`` to the same stored squares."""
    files = [(path, 0) for path in files_of(folder)]
    side = stored_side(SIDE, CROP_PCT)
    center, _ = decode_files(files, 3, side, workers=2, cache=False)
    others = [decode_files(files, 3, side, workers=2, cache=False, fit=Fit(mode))[0] for mode in ("squash", "border")]
    return all(np.array_equal(center.images.numpy(), other.images.numpy()) for other in others)


def train(folder: Path, mode: str, seed: int, runs: Path) -> dict:
    name = f"{folder.name}-{mode}-seed{seed}"
    saved = runs / f"{name}.result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    command = [sys.executable, "-m", "cnnlab", "train", str(folder), *BASE, *VARIANTS[mode]]
    command += ["--seed", str(seed), "--runs-dir", str(runs), "--name", name]
    load = os.getloadavg()[0]
    done = subprocess.run(["nice", "-n", "19", *command], capture_output=True, text=True)
    (runs / f"{name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    record = json.loads((runs / name / "run.json").read_text())
    test = json.loads((runs / name / "metrics.json").read_text())["test"]
    result = {
        "folder": folder.name,
        "mode": mode,
        "seed": seed,
        "recorded_mode": record["preprocess"]["crop_mode"],
        "acc": test["accuracy"],
        "count": test["num_samples"],
        "train_photos": record["data"]["splits"]["train"]["count"],
        "load": load,
    }
    saved.write_text(json.dumps(result))
    print(json.dumps(result), flush=True)
    return result


def row(folder: Path, results: list[dict], odd: tuple[int, int], variants: list[str]) -> str:
    """A table row: per variant each seed's test accuracy and their mean, and against center, on the same
    seeds, the change in test photos per seed ("not run" for a variant without runs on this folder)."""
    by_mode = {mode: {r["seed"]: r for r in results if r["mode"] == mode} for mode in variants}
    center = by_mode["center"]
    first = next(iter(center.values()))
    count = first["count"]
    accs, changes = [], []
    for mode in variants:
        seeds = sorted(set(by_mode[mode]) & set(center))
        if not seeds:
            accs.append("not run")
            changes.append("not run")
            continue
        label = "" if seeds == sorted(center) else f"seeds {', '.join(map(str, seeds))}: "
        values = [100 * by_mode[mode][seed]["acc"] for seed in seeds]
        accs.append(f"{label}{' / '.join(f'{v:.2f}' for v in values)} (mean {statistics.mean(values):.2f})")
        photos = [round((by_mode[mode][seed]["acc"] - center[seed]["acc"]) * count) for seed in seeds]
        changes.append(f"{label}{' / '.join(f'{p:+d}' for p in photos)} (total {sum(photos):+d})")
    loads = [r["load"] for r in results if r["mode"] in variants]
    seeds = ", ".join(map(str, sorted(center)))
    return (
        f"| {folder.name} | {first['train_photos']} / {count} | {odd[0]} of {odd[1]} | {seeds} | "
        f"{' | '.join(accs + changes[1:])} | {min(loads):.1f}-{max(loads):.1f} |"
    )


def table(variants: list[str], rows: list[str]) -> list[str]:
    """The Markdown table of ``rows`` (made by :func:`row` for ``variants``, center first)."""
    header = "| data | train / test photos | photos not square | seeds | "
    header += " | ".join(f"{TITLES[mode]}: test acc %" for mode in variants) + " | "
    header += " | ".join(f"{TITLES[mode]} - center (test photos)" for mode in variants[1:]) + " | load avg |"
    return [header, "|---|---|---|---|" + "---|" * (2 * len(variants) - 1) + "---|", *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out-runs", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["center", "squash"])  # center first
    parser.add_argument("--page-only", action="store_true", help="write the page from the runs already done")
    parser.add_argument("--reading", type=Path, help="a Markdown file with the reading, put under the table")
    args = parser.parse_args()
    args.out_runs.mkdir(parents=True, exist_ok=True)
    main_variants = [mode for mode in args.variants if mode in ("center", "squash")]
    extra_variants = ["center", *(mode for mode in args.variants if mode not in main_variants)]
    rows: list[str] = []
    extra_rows: list[str] = []
    square = []
    for folder in args.folders:
        odd = not_square(folder)
        if odd[0] == 0:
            square.append(
                f"- {folder.name}: all {odd[1]} photos square; the same pixels in every mode: {same_pixels(folder)}"
            )
            continue
        results = []
        for i, seed in enumerate(args.seeds):
            for mode in args.variants if i % 2 == 0 else args.variants[::-1]:
                saved = args.out_runs / f"{folder.name}-{mode}-seed{seed}.result.json"
                if args.page_only and not saved.is_file():
                    continue
                results.append(train(folder, mode, seed, args.out_runs))
        if any(r["mode"] == "center" for r in results):
            rows.append(row(folder, results, odd, main_variants))
            if len(extra_variants) > 1:
                extra_rows.append(row(folder, results, odd, extra_variants))
    command = "PYTHONPATH=src python bench/bench_crop_mode.py " + " ".join(map(str, args.folders))
    command += f" --out-runs {args.out_runs} --seeds {' '.join(map(str, args.seeds))}"
    command += f" --variants {' '.join(args.variants)}"
    intro = (
        "Each cell: `nice -n 19 cnnlab train DATA --model efficientnet_lite0 --pretrained --crop-mode MODE "
        "--seed S`, the default options otherwise (crop_pct 0.875, `--val-split auto`, `--refit auto`). "
        "center fits the shorter side and cuts the long side's ends (the default); squash resizes the "
        "whole photo to the square. Accuracy only: the machine (2 cores) was shared with other jobs "
        "throughout (load average when each run started in the last column), so no time is given. "
        "One test photo is 100/count points; a change is in test photos against center, per seed. "
        "squash, --crop-pct 1: the whole photo with no margin (every pixel, no random-crop room); "
        "border: the longer side fitted, the rest padded with the ImageNet mean."
    )
    body = table(main_variants, rows)
    if extra_rows:
        body += ["", "The whole photo in other ways: squash with no margin, and border (padded with the mean):", ""]
        body += table(extra_variants, extra_rows)
    if square:
        body += ["", "Not trained (every photo square, so the modes cannot differ):", "", *square]
    if args.reading and args.reading.is_file():
        body += ["", args.reading.read_text().strip()]
    write_page("crop_mode", "The centre crop against the whole photo: --crop-mode (issue #29)", command, intro, body)


if __name__ == "__main__":
    main()
