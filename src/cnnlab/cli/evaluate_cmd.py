"""``cnnlab evaluate`` and ``cnnlab predict``: everything from the run folder alone."""

from __future__ import annotations

import argparse
from typing import Any

from cnnlab.cli.options import add_command_options, given_options
from cnnlab.cli.output import add_format_argument, print_output
from cnnlab.cli.parser import thread_count
from cnnlab.config.schema import command_specs
from cnnlab.deploy.settings import DEFAULT_THREADS, THREADS_HELP, TTA_HELP, PredictOptions
from cnnlab.tables import Table

PREDICTION_FIELDS = ("image", "rank", "class", "probability", "error", "runtime")  # predict --format csv


def add_parser(subparsers: Any) -> None:
    e = subparsers.add_parser("evaluate", help="score a run on its test split or another data set")
    e.add_argument("run", metavar="RUN", help="a run folder, e.g. runs/simple_cnn-mnist-sample")
    e.add_argument(
        "--data",
        metavar="DATA",
        help="another image folder or built-in set to evaluate on (results go to RUN/eval/DATA/)",
    )
    e.add_argument("--tta", action="store_true", help=TTA_HELP)
    e.add_argument("--threads", type=thread_count, default=DEFAULT_THREADS, help=THREADS_HELP)
    e.set_defaults(func=run_evaluate)
    p = subparsers.add_parser(
        "predict",
        help="classify images with a trained run or an exported model",
        description="Classifies images with a run (by default its fastest runtime with the "
        "checkpoint's own outputs) or with a .onnx / TorchScript file on its own, and "
        "says which runtime answered.",
    )
    p.add_argument("run", metavar="RUN", help="a run folder, or a .onnx / TorchScript file written by cnnlab export")
    p.add_argument("inputs", metavar="IMAGE", nargs="+", help="image files and/or folders of images")
    add_format_argument(p)
    add_command_options(p, PredictOptions)
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
        print(
            f"time per image: {cost['plain']:.2f} ms plain, {cost['tta']:.2f} ms with TTA "
            f"({cost['tta'] / max(cost['plain'], 1e-9):.1f}x); TTA changed accuracy by "
            f"{100 * (tta['accuracy'] - metrics['accuracy']):+.2f} points"
        )
    print(f"results: {out_dir}")
    return 0


def _score_line(metrics: dict[str, Any]) -> str:
    line = (
        f"accuracy {metrics['accuracy']:.2%}  loss {metrics['loss']:.4f}  "
        f"balanced accuracy {metrics['balanced_accuracy']:.2%}"
    )
    if metrics.get("top5_accuracy") is not None:
        line += f"  top-5 {metrics['top5_accuracy']:.2%}"
    return line


def run_predict(args: argparse.Namespace) -> int:
    from cnnlab.api import predict

    rows = predict(args.run, args.inputs, **given_options(args, command_specs(PredictOptions)))
    print_output(
        _prediction_table(rows),
        args.format,
        records=_prediction_records(rows),
        fields=PREDICTION_FIELDS,
        json_data=rows,
    )
    return 0 if any(row["top"] for row in rows) else 2


def _prediction_table(rows: list[dict[str, Any]]) -> Table:
    """One line per image: its top classes (as many as the run has, up to --top-k), or why it was skipped."""
    ranks = max((len(row["top"]) for row in rows), default=1) or 1
    cells = []
    for row in rows:
        guesses = [f"{g['class']} ({g['probability']:.1%})" for g in row["top"]]
        if row.get("error"):
            guesses = [f"skipped: {row['error']}"]
        cells.append([str(row["input"]), *guesses, *[""] * (ranks - len(guesses))])
    return Table("", ["image", *[f"#{k}" for k in range(1, ranks + 1)]], cells)


def _prediction_records(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One CSV line per image and rank, with the runtime that answered (an unreadable image: one line with
    its error)."""
    records = []
    for row in rows:
        answered = {"image": row["input"], "runtime": row.get("runtime", "")}
        records += [
            {
                **answered,
                "rank": rank,
                "class": guess["class"],
                "probability": f"{guess['probability']:.6f}",
                "error": "",
            }
            for rank, guess in enumerate(row["top"], 1)
        ]
        if row.get("error"):
            records.append({**answered, "rank": "", "class": "", "probability": "", "error": row["error"]})
    return records
