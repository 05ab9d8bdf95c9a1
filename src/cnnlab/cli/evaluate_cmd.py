"""``cnnlab evaluate`` and ``cnnlab predict``: everything from the run folder alone."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from cnnlab.cli.parser import positive_int, thread_count
from cnnlab.deploy.settings import DEFAULT_THREADS, RUNTIME_CHOICES, RUNTIME_HELP, THREADS_HELP

TTA_HELP = ("test-time augmentation: average each image's probabilities over its mirror image and, where the run "
            "stores images larger than the model's input, 5 crops each mirrored (10 views); costs that many passes")


def add_parser(subparsers: Any) -> None:
    e = subparsers.add_parser("evaluate", help="score a run on its test split or another data set")
    e.add_argument("run", metavar="RUN", help="a run folder, e.g. runs/simple_cnn-mnist-sample")
    e.add_argument("--data", metavar="DATA",
                   help="another image folder or built-in set to evaluate on (results go to RUN/eval/DATA/)")
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)
    e.set_defaults(func=run_evaluate)
    p = subparsers.add_parser("predict", help="classify images with a trained run or an exported model",
                              description="Classifies images with a run (by default its fastest runtime with the "
                              "checkpoint's own outputs) or with a .onnx / TorchScript file on its own, and "
                              "says which runtime answered.")
    p.add_argument("run", metavar="RUN", help="a run folder, or a .onnx / TorchScript file written by cnnlab export")
    p.add_argument("inputs", metavar="IMAGE", nargs="+", help="image files and/or folders of images")
    p.add_argument("--top-k", dest="top_k", type=positive_int, default=3, help="classes per image (default: 3)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table",
                   help="table for people; json or csv for scripts (default: table)")
    p.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    p.add_argument("--tta", action="store_true", help=TTA_HELP)
    p.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)
    p.set_defaults(func=run_predict)


def run_evaluate(args: argparse.Namespace) -> int:
    from cnnlab.api import Run

    run = Run(args.run)
    metrics = run.evaluate(args.data, args.threads, args.tta)
    out_dir = run.path if args.data is None else run.files.evaluation(args.data).root
    tta = metrics.get("tta")
    print(("plain: " if tta else "") + _score_line(metrics))
    if tta:
        cost = tta["ms_per_image"]
        print(f"TTA:   {_score_line(tta)}  ({tta['how']})")
        print(f"time per image: {cost['plain']:.2f} ms plain, {cost['tta']:.2f} ms with TTA "
              f"({cost['tta'] / max(cost['plain'], 1e-9):.1f}x); TTA changed accuracy by "
              f"{100 * (tta['accuracy'] - metrics['accuracy']):+.2f} points")
    print(f"results: {out_dir}")
    return 0


def _score_line(metrics: dict[str, Any]) -> str:
    line = (f"accuracy {metrics['accuracy']:.2%}  loss {metrics['loss']:.4f}  "
            f"balanced accuracy {metrics['balanced_accuracy']:.2%}")
    if metrics.get("top5_accuracy") is not None:
        line += f"  top-5 {metrics['top5_accuracy']:.2%}"
    return line


def run_predict(args: argparse.Namespace) -> int:
    from cnnlab.api import predict

    rows = predict(args.run, args.inputs, args.top_k, args.runtime, args.threads, args.tta)
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["image", "rank", "class", "probability", "error", "runtime"])
        for row in rows:
            for rank, guess in enumerate(row["top"], 1):
                writer.writerow([row["input"], rank, guess["class"], f"{guess['probability']:.6f}", "", row["runtime"]])
            if row.get("error"):
                writer.writerow([row["input"], "", "", "", row["error"], row["runtime"]])
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("image", *[f"#{k}" for k in range(1, args.top_k + 1)])
        for row in rows:
            cells = [f"{g['class']} ({g['probability']:.1%})" for g in row["top"]]
            if row.get("error"):
                cells = [f"[red]skipped: {row['error']}[/red]"]
            table.add_row(row["input"], *cells)
        Console().print(table)
    return 0 if any(row["top"] for row in rows) else 2
