"""One self-contained HTML page per run: figures inlined as base64 PNGs, inline CSS, no scripts.

The page opens from a file, mail attachment or archive with no network, and every text from the
run folder is HTML-escaped. Missing files (an interrupted run) leave a short note, not an error.
"""

from __future__ import annotations

import base64
import csv
import html
import shlex
from pathlib import Path
from typing import Any, Iterable, Sequence

from cnnlab.evaluate.compare import (
    final_test_accuracy, format_value, read_optional_json, read_run_json, redraw_missing_figures,
)
from cnnlab.io import atomic_write_text

SECTIONS = [
    ("summary", "Summary"), ("command", "Command"), ("config", "Config"), ("data", "Data"),
    ("model", "Model"), ("training", "Training"), ("results", "Results"), ("samples", "Data samples"),
]
MAX_SKIPPED_ROWS = 100
MAX_CLASS_ROWS = 60

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#222;max-width:1150px;
 margin:0 auto;padding:1em 1.5em;background:#fafafa}
h1{margin:.2em 0}h2{border-bottom:2px solid #3a6ea5;padding-bottom:.2em;color:#1d3f66}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em 1.2em 1em;margin:1.2em 0}
nav a{margin-right:1em;color:#3a6ea5}
pre{background:#f3f3f3;padding:.8em;overflow-x:auto;font-size:13px;border-radius:4px}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .7em;text-align:left}
th{background:#eef3f8}tr:nth-child(even) td{background:#fafcff}
td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#666;font-size:13px}
.big{font-size:2.6em;font-weight:700;color:#1d6b35;margin:.2em 0}.big small{font-size:.4em;color:#555}
.muted{color:#777}.missing{color:#999;font-style:italic}.good{color:#1d6b35;font-weight:600}
.banner{padding:.6em 1em;border-radius:4px;background:#fff3cd;border:1px solid #e0c060}
"""

FIGURES = {  # file -> caption
    "history.png": "Training and validation accuracy and loss per epoch", "class_counts.png": "Images per class",
    "confusion_matrix.png": "Confusion matrix (counts; rows = true class)",
    "confusion_matrix_normalized.png": "Confusion matrix normalised per true class (recall)",
    "per_class_accuracy.png": "Accuracy (recall) per class", "most_confused.png": "Most frequent mistakes",
    "misclassified.png": "Misclassified test images", "reliability.png": "Calibration: confidence vs accuracy",
    "samples.png": "Sample images per class", "augmentation.png": "Augmented training images",
}


def _e(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def _read(path: Path) -> str | None:
    """A text file's contents, or None when it is missing."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An escaped HTML table; columns listed in ``numeric`` are right-aligned."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{_e(v)}</td>' for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table, keys as row headers."""
    body = "".join(f'<tr><th scope="row">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _missing(what: str) -> str:
    return f'<p class="missing">{_e(what)} not available (the run may have been interrupted).</p>'


def _figure(run_dir: Path, name: str) -> str:
    """An <img> with the PNG inlined as a data URI, or "" when the file is missing."""
    try:
        data = (run_dir / name).read_bytes()
    except OSError:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    caption = FIGURES.get(name, name)
    return (f'<figure><img src="{uri}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)} ({_e(name)})</figcaption></figure>")


def _pct(value: Any) -> str:
    return format_value("test_acc", value)  # "12.34%", or "—" for None


def _summary(run: dict[str, Any], metrics: dict[str, Any]) -> str:
    model, data, timing = run.get("model") or {}, run.get("data") or {}, run.get("timing") or {}
    pre = run.get("preprocess") or {}
    acc = final_test_accuracy(metrics, [s for s in run.get("stages") or [] if isinstance(s, dict)])
    status = str(run.get("status", "unknown"))
    out = []
    if status != "completed":
        out.append(f'<p class="banner">Run status: <b>{_e(status)}</b>: results may be partial.</p>')
    out.append(f'<p class="big">{_e(_pct(acc))} <small>test accuracy</small></p>')
    names = run.get("class_names") or []
    shown = ", ".join(map(str, names[:12])) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    params = model.get("params_total")
    trainable = format_value("params", model.get("params_trainable"))
    rows = [
        ("Run", run.get("name", "—")), ("Status", status), ("Model", model.get("name", "—")),
        ("Parameters", f"{format_value('params', params)} total, {trainable} trainable" if params else "—"),
        ("Data", data.get("source", "—")), ("Classes", f"{len(names)}: {shown}" if names else "—"),
        ("Input", f"{pre.get('image_size', '?')} px, {pre.get('channels', '?')} channel(s)" if pre else "—"),
        ("Training time", format_value("train_seconds", timing.get("train_seconds"))),
        ("Total time", format_value("train_seconds", timing.get("total_seconds"))),
        ("Created", run.get("created", "—")), ("cnnlab version", run.get("cnnlab_version", "—")),
    ]
    return "".join(out) + _pairs(rows)


def _data(run_dir: Path, run: dict[str, Any]) -> str:
    data = run.get("data") or {}
    splits = {k: v for k, v in (data.get("splits") or {}).items() if isinstance(v, dict)}
    out = []
    if splits:
        out.append(_table(["Split", "Images"], [(s, v.get("count", "—")) for s, v in splits.items()], numeric=[1]))
        classes = list(dict.fromkeys(c for v in splits.values() for c in (v.get("per_class") or {})))
        if classes:
            rows = [[c] + [(v.get("per_class") or {}).get(c, 0) for v in splits.values()]
                    for c in classes[:MAX_CLASS_ROWS]]
            out.append(_table(["Class", *splits], rows, numeric=range(1, len(splits) + 1)))
            if len(classes) > MAX_CLASS_ROWS:
                out.append(f'<p class="muted">… and {len(classes) - MAX_CLASS_ROWS} more classes (see figure).</p>')
    else:
        out.append(_missing("Split counts"))
    out.append(_figure(run_dir, "class_counts.png"))
    if data.get("skipped"):
        out.append(f"<p>{_e(data['skipped'])} file(s) were skipped while loading.</p>")
    skipped = (_read(run_dir / "skipped_files.csv") or "").splitlines()
    rows = [(r.get("path", ""), r.get("reason", "")) for r in csv.DictReader(skipped)]
    if rows:
        out.append("<h3>Skipped files</h3>" + _table(["Path", "Reason"], rows[:MAX_SKIPPED_ROWS]))
        if len(rows) > MAX_SKIPPED_ROWS:
            out.append(f'<p class="muted">… and {len(rows) - MAX_SKIPPED_ROWS} more in skipped_files.csv.</p>')
    return "".join(out)


def _improvement(stages: list[dict[str, Any]]) -> str:
    """The "improvement from fine-tuning" line: last stage vs first, on test (else best val) accuracy."""
    if len(stages) < 2:
        return ""
    for key, label in (("test_acc", "test"), ("best_val_acc", "best validation")):
        a, b = stages[0].get(key), stages[-1].get(key)
        if a is not None and b is not None:
            diff, name = 100 * (float(b) - float(a)), stages[-1].get("name", "fine-tuning")
            return (f'<p class="good">{_e(name)} {"improved" if diff > 0 else "changed"} {label} accuracy '
                    f"from {_e(_pct(a))} to {_e(_pct(b))} ({diff:+.2f} points).</p>")
    return ""


def _training(run_dir: Path, run: dict[str, Any]) -> str:
    out = [_figure(run_dir, "history.png") or _missing("Training history")]
    stages = [s for s in run.get("stages") or [] if isinstance(s, dict)]
    if stages:
        rows = [[s.get("name", "—"), s.get("epochs", "—"), format_value("train_seconds", s.get("seconds")),
                 _pct(s.get("best_val_acc")), _pct(s.get("test_acc"))] for s in stages]
        headers = ["Stage", "Epochs", "Time", "Best val acc", "Test acc"]
        if any(s.get("best_val_loss") is not None for s in stages):  # what checkpointing monitors
            headers.append("Best val loss")
            for row, s in zip(rows, stages):
                row.append("—" if s.get("best_val_loss") is None else f"{float(s['best_val_loss']):.4f}")
        keep = [i for i in range(len(headers)) if any(r[i] != "—" for r in rows)]  # drop unrecorded columns
        rows = [[r[i] for i in keep] for r in rows]
        out.append(_table([headers[i] for i in keep], rows, numeric=range(1, len(keep))))
        out.append(_improvement(stages))
    return "".join(out)


METRIC_ROWS = [
    ("accuracy", "Accuracy"), ("top5_accuracy", "Top-5 accuracy"), ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"), ("weighted_f1", "Weighted F1"), ("roc_auc", "ROC-AUC"),
    ("loss", "Loss (mean NLL)"), ("ece", "Calibration error (ECE)"), ("num_samples", "Images"),
]


def _metric_cell(split: dict[str, Any], key: str) -> str:
    """One formatted number of a metrics.json split; F1 averages come from scikit-learn's avg dicts."""
    value = (split.get(key[:-3] + "_avg") or {}).get("f1-score") if key.endswith("_f1") else split.get(key)
    if value is None or key == "num_samples":
        return "—" if value is None else str(int(value))
    return f"{float(value):.4f}" if key in ("loss", "ece") else _pct(value)


def _results(run_dir: Path, metrics: dict[str, Any]) -> str:
    splits = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    out = []
    if splits:
        rows = [[label] + [_metric_cell(v, key) for v in splits.values()] for key, label in METRIC_ROWS
                if any(_metric_cell(v, key) != "—" for v in splits.values())]
        out.append(_table(["Metric", *splits], rows, numeric=range(1, len(splits) + 1)))
    else:
        out.append(_missing("Test metrics (metrics.json)"))
    report = _read(run_dir / "classification_report.txt")
    if report:
        out.append(f"<h3>Classification report</h3><pre>{_e(report)}</pre>")
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_accuracy.png",
                 "most_confused.png", "misclassified.png", "reliability.png"):
        out.append(_figure(run_dir, name))
    return "".join(out)


def write_report(run_dir: Path, regenerate: bool = True) -> Path:
    """Builds ``run_dir/report.html`` from the run folder's files.

    Args:
        run_dir: a run folder (must contain run.json).
        regenerate: first draw, into the run folder, missing figures that metrics.csv, metrics.json
            and run.json can rebuild (history, confusion matrices, per-class, most confused, counts).

    Returns:
        The path of the written report.
    """
    run_dir = Path(run_dir)
    run = read_run_json(run_dir)
    metrics = read_optional_json(run_dir / "metrics.json")
    notes = redraw_missing_figures(run_dir) if regenerate else []
    command = run.get("command")
    if isinstance(command, list):
        command = shlex.join(map(str, command))
    config, summary = _read(run_dir / "config.yaml"), _read(run_dir / "model_summary.txt")
    samples = _figure(run_dir, "samples.png") + _figure(run_dir, "augmentation.png")
    bodies = {
        "summary": _summary(run, metrics),
        "command": f"<p>To reproduce this run:</p><pre>{_e(command)}</pre>" if command else _missing("Command"),
        "config": f"<pre>{_e(config)}</pre>" if config else _missing("config.yaml"),
        "data": _data(run_dir, run),
        "model": f"<pre>{_e(summary)}</pre>" if summary else _missing("The model summary"),
        "training": _training(run_dir, run),
        "results": _results(run_dir, metrics),
        "samples": samples or _missing("Sample images"),
    }
    title = f"cnnlab run: {run.get('name', run_dir.name)}"
    nav = "".join(f'<a href="#{sid}">{_e(label)}</a>' for sid, label in SECTIONS)
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>',
        f"<h1>{_e(title)}</h1><nav>{nav}</nav>",
        *(f'<p class="banner">{_e(n)}</p>' for n in notes),
        *(f'<section id="{sid}"><h2>{_e(label)}</h2>{bodies[sid]}</section>' for sid, label in SECTIONS),
        f'<p class="muted">Generated by cnnlab {_e(run.get("cnnlab_version", ""))} from {_e(run_dir.name)}.</p>',
        "</body></html>\n",
    ]
    out = run_dir / "report.html"
    atomic_write_text(out, "\n".join(parts))
    return out
