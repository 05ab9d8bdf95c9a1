"""What explaining costs: the report's Explain figures at the end of a run, and whole `cnnlab explain` commands.

    PYTHONPATH=src python bench/bench_explain.py --rounds 5      # ~4 min on 2 cores

Trains two small runs (the lesson's simple_cnn on mnist-sample, 1 epoch; EfficientNet-Lite0
with its ImageNet weights, stage 1 only, on 3 imagenette classes at 128 px), then:

* end of run: the evaluation and figures every run writes (evaluate_split + training figures)
  against the Explain figures (first filters + Grad-CAM on 6 test images), interleaved in one
  process, ``--rounds`` times; medians and the ratio.
* whole commands, as a user runs them (fresh process): `explain gradcam` and `explain filters`
  against `predict` on the same images, interleaved; medians and ratios to predict.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import dataset, write_page  # noqa: E402

CLASSES = {"tench": "n01440764", "church": "n03028079", "parachute": "n03888257"}


def cnnlab(*args: object) -> float:
    """Seconds a `cnnlab ...` process takes, start to exit."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def end_of_run(run: Path, rounds: int) -> tuple[float, float, int]:
    """Median seconds of (evaluation + figures, Explain figures) on a copy of ``run``; test images."""
    from cnnlab.data.prepare import prepare_data
    from cnnlab.evaluation.evaluator import draw_explain_figures, evaluate_split, score_split, write_training_figures
    from cnnlab.explain.inputs import open_explained
    from cnnlab.training.run_dir import RunFiles, read_record, read_run_config

    copy = Path(tempfile.mkdtemp()) / run.name
    shutil.copytree(run, copy)
    explained, config = open_explained(copy), read_run_config(RunFiles(copy))
    trained, files = explained.trained, explained.files
    form = trained.preprocess
    data = prepare_data(
        replace(config.data, image_size=form.side, channels=form.channels), config.train.seed, form.request()
    )
    test, record = data.splits["test"], read_record(files)
    rest, explain = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        evaluate_split(trained.model, trained.normalize, test, trained.class_names, files)
        write_training_figures(files, data.splits["train"], trained.class_names, record)
        rest.append(time.perf_counter() - started)
        scores, _ = score_split(trained.model, trained.normalize, test, len(trained.class_names))
        started = time.perf_counter()
        draw_explain_figures(
            trained.model, trained.normalize, test, scores.predictions(), scores.hardest(), trained.class_names, files
        )
        explain.append(time.perf_counter() - started)
    return statistics.median(rest), statistics.median(explain), len(test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved repetitions (default: 5)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-explain-"))
    photos = work / "photos"
    for split in ("train", "test"):
        for name, wnid in CLASSES.items():
            shutil.copytree(dataset("imagenette_sub") / split / wnid, photos / split / name)
    runs = work / "runs"
    cnnlab("train", "mnist-sample", "--model", "simple_cnn", "--epochs", "1", "--runs-dir", runs, "--name", "mnist")
    cnnlab(
        "train",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--stages",
        "frozen",
        "--image-size",
        "128",
        "--frozen-epochs",
        "5",
        "--runs-dir",
        runs,
        "--name",
        "lite0",
    )
    rows = ["| run | test images | evaluation + figures | Explain figures | added |", "|---|---:|---:|---:|---:|"]
    for name, label in (("mnist", "simple_cnn, mnist-sample, 28 px"), ("lite0", "Lite0 stage 1, 3 classes, 128 px")):
        rest, explain, count = end_of_run(runs / name, args.rounds)
        rows.append(f"| {label} | {count} | {rest:.2f} s | {explain:.2f} s | +{explain / rest:.0%} |")
    images = sorted((photos / "test" / "parachute").iterdir())[:4]
    commands = {
        "predict": ["predict", runs / "lite0", *images],
        "explain gradcam": ["explain", "gradcam", runs / "lite0", *images, "--out", work / "cam"],
        "explain filters": ["explain", "filters", runs / "lite0", "--out", work / "filters"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(max(1, args.rounds // 2)):
        for name, command in commands.items():
            seconds[name].append(cnnlab(*command))
    base = statistics.median(seconds["predict"])
    table = ["| command (Lite0 run, 4 photos) | median | vs predict |", "|---|---:|---:|"]
    for name, values in seconds.items():
        table.append(
            f"| `cnnlab {name}` | {statistics.median(values):.1f} s | {statistics.median(values) / base:.2f}x |"
        )
    write_page(
        "explain",
        "Explain: what the report's figures and the commands cost",
        f"PYTHONPATH=src python bench/bench_explain.py --rounds {args.rounds}",
        f"Medians of {args.rounds} interleaved rounds in one process (end of run), and of "
        f"{max(1, args.rounds // 2)} fresh processes per command. The Explain figures are drawn after every "
        "training run (first filters, Grad-CAM on 3 correct and 3 mistaken test images).",
        ["## End of a run", "", *rows, "", "## Whole commands", "", *table],
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
