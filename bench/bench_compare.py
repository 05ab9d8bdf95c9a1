"""The lesson's section 7 as measured here: ``cnnlab compare`` on VGG16, ResNet50, MobileNetV2,
EfficientNet-Lite0 and simple_cnn, at 1 and 2 threads.

    PYTHONPATH=src python bench/bench_compare.py --rounds 2                     # ~20 min on 2 busy cores
    PYTHONPATH=src python bench/bench_compare.py --rounds 0 --data PHOTOS --time-budget 600 --image-size 160

Runs the whole command as a user does, once per (round, thread count), alternating the thread
counts so a change in the machine's load hits both alike. Each run measures every model in its
own fresh process (see comparison.md). Per model the page gives the median over rounds of each
run's median latency, with the range of the runs' interquartile ranges (page ``compare``). With
``--data``, one more run trains three models the same way on the photos (exercise 2, page
``compare_photos``): EfficientNet-Lite0 from its built-in ImageNet weights, the others from scratch.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import OUT, write_page  # noqa: E402

from cnnlab.comparison.columns import cell  # noqa: E402

MODELS = ["vgg16", "resnet50", "mobilenetv2", "efficientnet_lite0", "simple_cnn"]
DATA_MODELS = ["efficientnet_lite0", "mobilenetv2", "simple_cnn"]


def compare(args: list[str]) -> dict[str, Any]:
    """Runs ``cnnlab compare ARGS --format json`` as a whole process; its JSON."""
    command = [sys.executable, "-m", "cnnlab.cli.main", "compare", *args, "--format", "json"]
    print("$ cnnlab " + shlex.join(command[3:]), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout)


def _median_spread(values: list[tuple[float, float, float]], digits: int) -> str:
    """'median (lowest p25 - highest p75)' over runs of (median, p25, p75)."""
    median = statistics.median(v[0] for v in values)
    low, high = min(v[1] for v in values), max(v[2] for v in values)
    return f"{median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def _digits(value: float) -> int:
    return 0 if value >= 100 else 1 if value >= 10 else 2


def _runs_of(runs: list[dict[str, Any]], index: int, key: str, low: str, high: str) -> list[tuple[float, float, float]]:
    return [
        (r["rows"][index][key], r["rows"][index][low], r["rows"][index][high])
        for r in runs
        if r["rows"][index].get(key) is not None
    ]


def measure_table(runs: dict[int, list[dict[str, Any]]], batch: int) -> list[str]:
    threads = sorted(runs)
    first = runs[threads[0]][0]["rows"]
    plural = {t: f"{t} thread{'s' if t > 1 else ''}" for t in threads}
    head = ["model", "params", "layers (conv+linear)", "MACs", "FP32 MB", "forward MB, batch 1 / " + str(batch)]
    head += [f"latency ms, {plural[t]}" for t in threads]
    head += [f"latency {plural[t]} / {plural[threads[0]]}" for t in threads[1:]]
    head += [f"images/s at batch {batch}, {plural[t]}" for t in threads]
    head += ["ImageNet top-1 (cited)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for index, row in enumerate(first):
        cells = [row["model"]] + [cell(row, key) for key in ("params_total", "layers", "macs", "size_mb", "memory_mb")]
        latency = {t: _runs_of(runs[t], index, "latency_ms", "latency_p25_ms", "latency_p75_ms") for t in threads}
        cells += [_median_spread(latency[t], _digits(latency[t][0][0])) if latency[t] else "-" for t in threads]
        base = statistics.median(v[0] for v in latency[threads[0]]) if latency[threads[0]] else None
        cells += [
            f"{statistics.median(v[0] for v in latency[t]) / base:.2f}x" if base and latency[t] else "-"
            for t in threads[1:]
        ]
        for t in threads:
            values = _runs_of(runs[t], index, "throughput", "throughput_p25", "throughput_p75")
            cells.append(_median_spread(values, _digits(values[0][0])) if values else "-")
        cells.append(cell(row, "imagenet_top1"))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def data_table(result: dict[str, Any]) -> list[str]:
    head = [
        "model",
        "trained from",
        "test accuracy",
        "training time",
        "epochs",
        "s/epoch (last stage)",
        "latency ms, batch 1",
        "ImageNet top-1 (cited)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        keys = ("trained_from", "test_acc", "train_seconds", "epochs", "epoch_seconds", "latency_ms", "imagenet_top1")
        lines.append("| " + " | ".join([row["model"], *(cell(row, key) for key in keys)]) + " |")
    return lines


def measure_page(args: argparse.Namespace, command: str) -> None:
    common = ["--repeats", str(args.repeats), "--batch-size", str(args.batch_size)]
    runs: dict[int, list[dict[str, Any]]] = {t: [] for t in args.threads}
    for round_ in range(args.rounds):
        for t in args.threads:
            out = OUT / "compare" / f"threads{t}-round{round_ + 1}"
            runs[t].append(compare([*MODELS, "--threads", str(t), "--out", str(out), *common]))
    example = runs[args.threads[0]][0]
    how = example["how_measured"]
    body = measure_table(runs, args.batch_size)
    vgg = next((r for r in example["rows"] if r["model"] == "vgg16" and r.get("memory_mb")), None)
    if vgg is not None:  # the one memory figure that needs a word: its first pass holds a second fc6
        body += [
            "",
            f"VGG16's first forward pass peaks {vgg['memory_mb']:.0f} MB above its loaded weights even at "
            "batch 1: about the size of its fc6 weights (4096 x 512 x 7 x 7 floats = 411 MB), which the "
            "convolution library copies into its own layout on the first call (as NCHW too).",
        ]
    threads = ", ".join(f"{t}" for t in args.threads)
    body += [
        "",
        f"How measured (threads: {threads}, as the columns say): "
        + "; ".join(f"**{k}**: {re.sub(r', [0-9]+ threads?,', ',', v)}" for k, v in how.items() if k != "imagenet")
        + ".",
        "",
        f"ImageNet top-1: {how['imagenet']}; the weights of each row: "
        + ", ".join(
            f"{r['model']} = {r['imagenet_weights']} at {r['imagenet_px']} px"
            for r in example["rows"]
            if r.get("imagenet_weights")
        )
        + ".",
        "",
        "Machine during each run: "
        + "; ".join(
            f"{t} thread{'s' if t > 1 else ''}, round {i + 1}: {r['machine'].split('load average ')[-1]}"
            for t in args.threads
            for i, r in enumerate(runs[t])
        )
        + " (load averages).",
        "",
        "Each run's own files (comparison.md, .csv, .png) are in bench/out/compare/ (not committed).",
    ]
    write_page(
        "compare",
        "Comparing architectures",
        command,
        "`cnnlab compare` measures each model on this machine (random weights: size, cost and speed do not "
        "depend on them) at 224x224 px with a 1000-class head, so parameters match the published ImageNet "
        f"models. Latency: median over {args.rounds} runs of each run's median, in brackets the lowest "
        "25th and highest 75th percentile of those runs; the same for throughput.",
        body,
    )


def photos_page(args: argparse.Namespace, command: str) -> None:
    out = OUT / "compare" / "photos"
    flags = [
        "--data",
        args.data,
        "--pretrained",
        "--time-budget",
        f"{args.time_budget:g}",
        "--image-size",
        str(args.image_size),
    ]
    result = compare([*DATA_MODELS, *flags, "--threads", "1", "--out", str(out), "--repeats", str(args.repeats)])
    body = [*data_table(result), "", result["trained_the_same_way"], "", f"Machine at the end: {result['machine']}."]
    write_page(
        "compare_photos",
        f"Exercise 2: the same models trained on {Path(args.data).name}",
        command,
        f"`cnnlab compare {' '.join(DATA_MODELS)} {' '.join(flags)}`: the lesson's exercise 2 as one command. "
        "Offline only EfficientNet-Lite0 has ImageNet weights, so it takes the transfer path and the others "
        "train from scratch; latency is measured at 1 thread.",
        body,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="runs per thread count, alternated (0: none)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data", default=None, help="a photo folder for exercise 2 (trains 3 models)")
    p.add_argument("--time-budget", type=float, default=120)
    p.add_argument("--image-size", type=int, default=224, help="of the exercise-2 run (the measured table: 224)")
    args = p.parse_args(argv)
    command = "PYTHONPATH=src python bench/bench_compare.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.rounds > 0:
        measure_page(args, command)
    if args.data:
        photos_page(args, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
