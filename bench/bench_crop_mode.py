"""The centre crop against the whole photo (issue #29): test accuracy of --crop-mode center and squash.

    PYTHONPATH=src python bench/bench_crop_mode.py DATA [DATA ...] --out-runs /tmp/crop-mode [--seeds 0 1]

Per folder and seed: the whole command a user types, ``cnnlab train DATA --model efficientnet_lite0
--pretrained --crop-mode MODE --seed S``, for MODE center (the default: shorter side fitted, the long
side's ends cut) and squash (the whole photo resized to the square); the order alternates from one
run to the next. Both keep the model's crop_pct (0.875): the model sees the centre of the stored
square either way, as timm's evaluation does. Accuracy only: runs share the machine with other jobs
(``nice -n 19``), so no time is reported. A folder whose photos are all square decodes to the same
pixels in both modes (checked here on its files): it is listed, not trained. A run already done
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
MODES = ("center", "squash")
SIDE, CROP_PCT = 224, 0.875  # efficientnet_lite0's input and timm's crop_pct for it


def files_of(folder: Path) -> list[Path]:
    return [path for split in discover(folder).files.values() for path, _ in split]


def not_square(folder: Path) -> tuple[int, int]:
    """(photos whose sides differ, photos) of ``folder``, from the headers."""
    files = files_of(folder)
    return sum(info.width != info.height for info in map(probe_image, files)), len(files)


def same_pixels(folder: Path) -> bool:
    """Whether center and squash decode every file of ``folder`` to the same stored squares."""
    files = [(path, 0) for path in files_of(folder)]
    side = stored_side(SIDE, CROP_PCT)
    center, _ = decode_files(files, 3, side, workers=2, cache=False)
    squash, _ = decode_files(files, 3, side, workers=2, cache=False, fit=Fit("squash"))
    return bool(np.array_equal(center.images.numpy(), squash.images.numpy()))


def train(folder: Path, mode: str, seed: int, runs: Path) -> dict:
    name = f"{folder.name}-{mode}-seed{seed}"
    saved = runs / f"{name}.result.json"
    if saved.is_file():
        return json.loads(saved.read_text())
    command = [sys.executable, "-m", "cnnlab", "train", str(folder), *BASE, "--crop-mode", mode]
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


def row(folder: Path, results: list[dict], odd: tuple[int, int]) -> str:
    by_mode = {mode: [r for r in results if r["mode"] == mode] for mode in MODES}
    center, squash = by_mode["center"], by_mode["squash"]
    seeds = sorted({r["seed"] for r in center} & {r["seed"] for r in squash})
    count = center[0]["count"]
    accs = {mode: [100 * r["acc"] for r in by_mode[mode] if r["seed"] in seeds] for mode in MODES}
    photos = [round((s - c) * count / 100) for c, s in zip(accs["center"], accs["squash"])]
    each = lambda values: " / ".join(f"{v:.2f}" for v in values)  # noqa: E731
    return (
        f"| {folder.name} | {center[0]['train_photos']} / {count} | {odd[0]} of {odd[1]} | "
        f"{', '.join(map(str, seeds))} | {each(accs['center'])} (mean {statistics.mean(accs['center']):.2f}) | "
        f"{each(accs['squash'])} (mean {statistics.mean(accs['squash']):.2f}) | "
        f"{' / '.join(f'{p:+d}' for p in photos)} | {min(r['load'] for r in results):.1f}-"
        f"{max(r['load'] for r in results):.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--out-runs", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--page-only", action="store_true", help="write the page from the runs already done")
    parser.add_argument("--reading", type=Path, help="a Markdown file with the reading, put under the table")
    args = parser.parse_args()
    args.out_runs.mkdir(parents=True, exist_ok=True)
    rows, square = [], []
    for folder in args.folders:
        odd = not_square(folder)
        if odd[0] == 0:
            square.append(
                f"- {folder.name}: all {odd[1]} photos square; same pixels in both modes: {same_pixels(folder)}"
            )
            continue
        results = []
        for i, seed in enumerate(args.seeds):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                saved = args.out_runs / f"{folder.name}-{mode}-seed{seed}.result.json"
                if args.page_only and not saved.is_file():
                    continue
                results.append(train(folder, mode, seed, args.out_runs))
        if {r["mode"] for r in results} == set(MODES):
            rows.append(row(folder, results, odd))
    command = "PYTHONPATH=src python bench/bench_crop_mode.py " + " ".join(map(str, args.folders))
    command += f" --out-runs {args.out_runs} --seeds {' '.join(map(str, args.seeds))}"
    intro = (
        "Each cell: `nice -n 19 cnnlab train DATA --model efficientnet_lite0 --pretrained --crop-mode MODE "
        "--seed S`, the default options otherwise (crop_pct 0.875, `--val-split auto`, `--refit auto`). "
        "center fits the shorter side and cuts the long side's ends (the default); squash resizes the "
        "whole photo to the square. Accuracy only: the machine (2 cores) was shared with other jobs "
        "throughout (load average when each run started in the last column), so no time is given. "
        "One test photo is 100/count points; change in photos is squash minus center, per seed."
    )
    body = [
        (
            "| data | train / test photos | photos not square | seeds | center test acc % | squash test acc % | "
            "change (photos) | load avg |"
        ),
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if square:
        body += ["", "Not trained (every photo square, so the modes cannot differ):", "", *square]
    if args.reading and args.reading.is_file():
        body += ["", args.reading.read_text().strip()]
    write_page("crop_mode", "The centre crop against the whole photo: --crop-mode (issue #29)", command, intro, body)


if __name__ == "__main__":
    main()
