"""One self-contained HTML page per run: figures inlined as base64 PNGs, inline CSS, no scripts.

The page reads results first: the headline numbers, the training curves, the test results
(confusion matrix, mistakes); then the data; then, folded, the config and model summary. It
opens from a file, mail attachment or archive with no network, and every text from the run
folder is HTML-escaped. Missing files (an interrupted run) leave a short note, not an error.
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.data.preprocess import FITTED, Preprocess
from cnnlab.evaluation.evaluator import draw_history, draw_metric_figures
from cnnlab.evaluation.runs_summary import final_test_accuracy, format_value, kept_val_accuracy
from cnnlab.figures import plot_class_counts
from cnnlab.io import atomic_write_text
from cnnlab.markup import escape as _e, folded as _folded, missing as _missing, pairs as _pairs, table as _table
from cnnlab.phases import phase_line
from cnnlab.tables import Table
from cnnlab.training.history import load_history
from cnnlab.training.record import RunRecord, StageRecord
from cnnlab.training.run_dir import (
    FIGURES,
    RunFiles,
    open_run,
    read_optional_json,
    read_record,
    read_skipped,
    read_text,
)

SECTIONS = [
    ("summary", "Summary"),
    ("training", "Training"),
    ("results", "Results"),
    ("explain", "Explain"),
    ("deployment", "Deployment"),
    ("data", "Data"),
    ("reproduce", "Reproduce"),
]
OPTIONAL_SECTIONS = {"deployment"}  # shown only when the run has something for them
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
details{margin:.6em 0}summary{cursor:pointer;color:#1d3f66;font-weight:600}
.headline{display:flex;flex-wrap:wrap;gap:1.5em;align-items:baseline}
.big{font-size:2.6em;font-weight:700;color:#1d6b35;margin:.2em 0}.big small{font-size:.4em;color:#555}
.stat{font-size:1.3em;font-weight:600}.stat small{display:block;font-size:.6em;color:#666;font-weight:400}
.muted{color:#777}.missing{color:#999;font-style:italic}.good{color:#1d6b35;font-weight:600}
.banner{padding:.6em 1em;border-radius:4px;background:#fff3cd;border:1px solid #e0c060}
"""


def _figure(files: RunFiles, key: str) -> str:
    """An <img> with the PNG inlined as a data URI, or "" when the file is missing."""
    path = files.figure(key)
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    caption = FIGURES[key].caption
    return (
        f'<figure><img src="{uri}" alt="{_e(caption)}">'
        f"<figcaption>{_e(caption)} ({_e(path.name)})</figcaption></figure>"
    )


def _object(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else {} (a field missing or malformed in an older file)."""
    return value if isinstance(value, dict) else {}


def _pct(value: Any) -> str:
    return format_value("test_acc", value)  # "12.34%", or "—" for None


def _stat(value: str, label: str) -> str:
    return f'<div class="stat">{_e(value)}<small>{_e(label)}</small></div>'


def _input_text(pre: Preprocess | None) -> str:
    """ "224 px, 3 channel(s), the centre 87.5% of 256-px stored squares" (the margin only when there is one)."""
    if pre is None:
        return "—"
    size = pre.image_size if isinstance(pre.image_size, int) else list(pre.image_size)
    crop = f", the centre {100 * pre.crop_pct:g}% of {pre.stored_side}-px stored squares" if pre.has_margin else ""
    fitted = f" ({FITTED[pre.crop_mode]})" if pre.crop_mode != "center" else ""
    return f"{size} px, {pre.channels} channel(s){crop}{fitted}"


def _headline(run: RunRecord, metrics: dict[str, Any]) -> str:
    """The test accuracy in large print, the other headline numbers beside it."""
    test = _object(metrics.get("test"))
    stats = [_stat(format_value("train_seconds", run.timing.train_seconds), "training time")]
    if test.get("balanced_accuracy") is not None:
        stats.insert(0, _stat(_pct(test["balanced_accuracy"]), "balanced accuracy"))
    if test.get("top5_accuracy") is not None:
        stats.insert(0, _stat(_pct(test["top5_accuracy"]), "top-5 accuracy"))
    if test.get("loss") is not None:
        stats.append(_stat(f"{float(test['loss']):.4f}", "test loss"))
    return (
        f'<div class="headline"><p class="big">{_e(_pct(final_test_accuracy(metrics, run.stages)))} '
        f"<small>test accuracy</small></p>{''.join(stats)}</div>"
    )


def _how_it_ended(run: RunRecord) -> list[str]:
    """Paragraphs on which weights were kept, the refit, resumes and the run's notes."""
    out = [_improvement(run.stages)]
    if run.kept is not None and run.kept.why:  # which stage's weights the run ended with
        out.append(f"<p>{_e(run.kept.why[0].upper() + run.kept.why[1:])}.</p>")
    refit = run.refit
    if refit is not None and refit.done:  # the headline is the refit model's; the stage table's figures are not its
        out.append(
            f"<p>{_e((refit.line or 'refit').capitalize())}: the test accuracy above is the refit "
            f"model's (the model validation chose: {_e(_pct(refit.validated_test_acc))}, kept as "
            f"{_e(refit.validated_checkpoint or 'validated.ckpt')}); the validation figures are that "
            "model's, the refit trained on the validation images.</p>"
        )
    resumes = [attempt.resumed_at for attempt in run.attempts if attempt.resumed_at]
    if resumes:
        times = "once" if len(resumes) == 1 else f"{len(resumes)} times"
        out.append(f"<p>Resumed {times}: {_e('; '.join(resumes))}. Times count the work of every attempt.</p>")
    out.extend(f'<p class="banner">{_e(note)}</p>' for note in run.notes)
    return out


def _facts(run: RunRecord, status: str) -> list[tuple[str, Any]]:
    """The summary's table: what the run was, on what, and what it took."""
    names, timing = run.class_names, run.timing
    shown = ", ".join(map(str, names[:12])) + (f", … ({len(names)} in all)" if len(names) > 12 else "")
    rows: list[tuple[str, Any]] = [
        ("Run", run.name or "—"),
        ("Status", status),
        ("Model", run.model.name or "—"),
        ("Parameters", _parameters(run)),
        ("Data", run.data.source or "—"),
        ("Classes", f"{len(names)}: {shown}" if names else "—"),
        ("Input", _input_text(run.preprocess)),
        ("Total time", format_value("train_seconds", timing.total_seconds)),
        ("Time by phase", phase_line(timing.phases)[len("time: ") :] if timing.phases else "—"),
        ("Peak memory", _peak_memory(run.memory.peak_rss_mb if run.memory else [])),
        ("Created", run.created or "—"),
        ("cnnlab version", run.cnnlab_version or "—"),
    ]
    last = run.attempts[-1] if run.attempts else None
    if last is not None and last.processes:  # trained by several processes (DDP)
        processes = (
            f"{last.processes} on {last.nodes or 1} machine(s), global batch "
            f"{last.global_batch} = {last.processes} x {last.device_batch}"
        )
        rows.insert(-2, ("Processes", processes))
    return rows


def _summary(run: RunRecord, metrics: dict[str, Any]) -> str:
    status = run.status or "unknown"
    out = []
    if status != "completed":
        out.append(f'<p class="banner">Run status: <b>{_e(status)}</b>: results may be partial.</p>')
    out.append(_headline(run, metrics))
    out.extend(_how_it_ended(run))
    return "".join(out) + _pairs(_facts(run, status))


def _parameters(run: RunRecord) -> str:
    """ "3,383,818 total; trained: 12,810 in stage frozen, 1,982,730 in stage finetune (kept)".

    Each stage trains its own share (a frozen base, then the top too), so one "trainable" count
    (the model's as built, i.e. stage 1's) would understate what the kept model learned.
    """
    if not run.model.params_total:
        return "—"
    total = f"{format_value('params', run.model.params_total)} total"
    stages = [stage for stage in run.stages if stage.params_trainable is not None]
    if len(stages) < 2:
        trainable = stages[0].params_trainable if stages else run.model.params_trainable
        return f"{total}, {format_value('params', trainable)} trainable"
    kept = run.kept_stage()
    shares = [
        f"{format_value('params', s.params_trainable)} in stage {s.name or '?'}"
        + (" (kept)" if kept is not None and s.name == kept.name else "")
        for s in stages
    ]
    return f"{total}; trained: {', '.join(shares)}"


def _peak_memory(peak_rss_mb: list[Any]) -> str:
    """Peak resident memory per process: "812 MiB", or "812, 640 MiB (per process)"."""
    peaks = [int(p) for p in peak_rss_mb if isinstance(p, (int, float)) and p > 0]
    if not peaks:
        return "—"
    return f"{', '.join(f'{p:,}' for p in peaks)} MiB" + (" (per process)" if len(peaks) > 1 else "")


def _improvement(stages: list[StageRecord]) -> str:
    """The "improvement from fine-tuning" line: last stage vs first, on test accuracy, once the last finished."""
    if len(stages) < 2 or not stages[-1].done:  # an interrupted stage 2 has improved nothing yet
        return ""
    a, b = stages[0].test_acc, stages[-1].test_acc
    if a is None or b is None:
        return ""
    diff, name = 100 * (float(b) - float(a)), stages[-1].name or "fine-tuning"
    return (
        f'<p class="{"good" if diff > 0 else "muted"}">{_e(name)} {"improved" if diff > 0 else "changed"} '
        f"test accuracy from {_e(_pct(a))} to {_e(_pct(b))} ({diff:+.2f} points).</p>"
    )


def _training(files: RunFiles, run: RunRecord) -> str:
    out = [_figure(files, "history") or _missing("Training history")]
    found = run.lr_find
    if found is not None and found.lr is not None:  # --lr auto: the rate the finder picked, and how
        out.append(
            f"<p>Learning rate {float(found.lr):.3g} for stage '{_e(found.stage)}', picked by "
            f"the learning-rate finder ({_e(found.steps)} rates from {_e(found.start_lr)} to "
            f"{_e(found.end_lr)}, {_e(found.seconds)} s). Rule: {_e(found.rule)}.</p>" + _figure(files, "lr_find")
        )
    if run.stages:
        out.append(_stage_table(files, run))
    return "".join(out)


def _stage_table(files: RunFiles, run: RunRecord) -> str:
    """One row per stage: epochs, what trained, time, validation and test accuracy (unrecorded columns dropped)."""
    history = load_history(files.metrics_csv)
    kept = run.kept_stage() if len(run.stages) > 1 else None
    rows = [
        [
            (s.name or "—") + _kept_mark(s, kept, len(run.stages)),
            s.epochs,
            format_value("params", s.params_trainable),
            format_value("train_seconds", s.seconds),
            _pct(kept_val_accuracy(s, history)),
            _pct(s.test_acc),
            "—" if s.best_val_loss is None else f"{float(s.best_val_loss):.4f}",
        ]
        for s in run.stages
    ]
    headers = ["Stage", "Epochs", "Trainable parameters", "Time", "Val acc (kept epoch)", "Test acc", "Best val loss"]
    keep = [i for i in range(len(headers)) if any(r[i] != "—" for r in rows)]  # drop unrecorded columns
    return _table([headers[i] for i in keep], [[r[i] for i in keep] for r in rows], range(1, len(keep)))


def _kept_mark(stage: StageRecord, kept: StageRecord | None, stages: int) -> str:
    """ " (kept)" on the stage whose weights a run of several ended with; " (not kept)" on a lone stage
    whose best epoch did not replace the weights it started from (a pruned copy's fine-tuning)."""
    if kept is not None and stage.name == kept.name:
        return " (kept)"
    lone_and_beaten = stages == 1 and stage.replaced_best is False and stage.val_at_best is not None
    return " (not kept)" if lone_and_beaten else ""


METRIC_ROWS = [
    ("accuracy", "Accuracy"),
    ("top5_accuracy", "Top-5 accuracy"),
    ("balanced_accuracy", "Balanced accuracy"),
    ("macro_f1", "Macro F1"),
    ("weighted_f1", "Weighted F1"),
    ("roc_auc", "ROC-AUC"),
    ("loss", "Loss (mean NLL)"),
    ("ece", "Calibration error (ECE)"),
    ("num_samples", "Images"),
]


def _metric_cell(split: dict[str, Any], key: str) -> str:
    """One formatted number of a metrics.json split; F1 averages come from scikit-learn's avg dicts."""
    value = (split.get(key[:-3] + "_avg") or {}).get("f1-score") if key.endswith("_f1") else split.get(key)
    if value is None or key == "num_samples":
        return "—" if value is None else str(int(value))
    return f"{float(value):.4f}" if key in ("loss", "ece") else _pct(value)


def _results(files: RunFiles, metrics: dict[str, Any]) -> str:
    splits = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    out = []
    if splits:
        rows = [
            [label] + [_metric_cell(v, key) for v in splits.values()]
            for key, label in METRIC_ROWS
            if any(_metric_cell(v, key) != "—" for v in splits.values())
        ]
        headers = [f"{k[:-4]}, with TTA" if k.endswith("_tta") else k for k in splits]
        out.append(_table(["Metric", *headers], rows, numeric=range(1, len(splits) + 1)))
        out.append(_tta(metrics))
    else:
        out.append(_missing("Test metrics (metrics.json)"))
    out.extend(
        _figure(files, key) for key in ("confusion_matrix", "misclassified", "per_class_accuracy", "most_confused")
    )
    more = _figure(files, "confusion_matrix_normalized") + _figure(files, "reliability")
    report = read_text(files.classification_report)
    if report:
        more += f"<pre>{_e(report)}</pre>"
    if more:
        out.append(_folded("Normalised confusion matrix, calibration and the classification report", more))
    return "".join(out)


def _tta(metrics: dict[str, Any]) -> str:
    """Test-time augmentation beside the plain scores: what was averaged, what it cost, per class."""
    tta: dict[str, Any] = metrics["tta"] if isinstance(metrics.get("tta"), dict) else {}
    split = str(tta.get("split", "test"))
    plain, augmented = metrics.get(split), metrics.get(f"{split}_tta")
    if not (isinstance(plain, dict) and isinstance(augmented, dict)):
        return ""
    cost = tta.get("ms_per_image") or {}
    change = 100 * (float(augmented["accuracy"]) - float(plain["accuracy"]))
    text = (
        f"<p>Test-time augmentation (<code>cnnlab evaluate RUN --tta</code>): each image's probabilities are "
        f"the mean over {_e(tta.get('how', 'its views'))}. It changed {_e(split)} accuracy by {change:+.2f} "
        f"points, at {float(cost.get('tta', 0)):.2f} ms per image against {float(cost.get('plain', 0)):.2f} ms "
        "plain (this machine, batched).</p>"
    )
    names = [n for n in plain.get("per_class") or {} if n in (augmented.get("per_class") or {})]
    rows = [
        [n, _pct(plain["per_class"][n].get("recall")), _pct(augmented["per_class"][n].get("recall"))]
        for n in names[:MAX_CLASS_ROWS]
    ]
    return text + (
        _folded(
            "Accuracy (recall) per class, plain and with TTA",
            _table(["Class", "Plain", "With TTA"], rows, numeric=[1, 2]),
        )
        if rows
        else ""
    )


def _explain(files: RunFiles) -> str:
    figures = _figure(files, "explain_filters") + _figure(files, "explain_gradcam")
    if not figures:
        return (
            _missing("The Explain figures") + '<p class="muted">cnnlab report RUN draws them from the checkpoint.</p>'
        )
    return (
        "<p>What the network looks at. The first layer's filters respond to edges, colours and textures. "
        "Grad-CAM colours the parts of an image whose features raised the predicted class (red = most): "
        "a mistake whose heat sits on the background hints at a shortcut the model learned. "
        "For any image: <code>cnnlab explain gradcam RUN IMAGE</code>.</p>" + figures
    )


def _deployment(files: RunFiles) -> str:
    """The before/after tables the deploy commands saved (distillation, pruning, INT8, benchmark), a
    pruning sweep's curve, and the run's pruned copies side by side."""
    tables = "".join(table.html() for table in Table.load_all(files.tables))
    return tables + _figure(files, "prune_sweep") + _pruned_copies(files)


def _pruned_copies(files: RunFiles) -> str:
    """One row per pruned copy of this run (``cnnlab prune`` writes ``RUN/pruned/<kind>-<percent>/``),
    read from the before/after table each copy saved: its figures were measured beside this run."""
    found = [
        (child.name, Table.load(RunFiles(child).table("prune")))
        for child in sorted(files.pruned.glob("*"))
        if child.is_dir()
    ]
    copies = [(name, table.data) for name, table in found if table is not None and table.data.get("kind")]
    if not copies:
        return ""
    copies.sort(key=lambda c: (str(c[1]["kind"]), float(c[1].get("requested") or 0)))

    def number(value: Any, fmt: str) -> str:
        return "—" if not isinstance(value, (int, float)) else format(value, fmt)

    rows, notes = [], []
    for name, d in copies:
        change = (
            100 * (d["final_accuracy"] - d["parent_test_accuracy"])
            if isinstance(d.get("parent_test_accuracy"), (int, float))
            else None
        )
        rows.append(
            [
                name,
                number(d.get("achieved"), ".0%"),
                number(d.get("params"), ",") + " of " + number(d.get("parent_params"), ","),
                _pct(d.get("val_accuracy")),
                f"{_pct(d.get('final_accuracy'))} ({number(change, '+.2f')})",
                f"{number(d.get('pruned_ms'), '.2f')} vs {number(d.get('parent_ms'), '.2f')}",
                number(d.get("speedup_batch1"), ".2f") + "x",
                str(d.get("finetune_epochs") or 0),
                "yes (below)" if d.get("warnings") else "none",
            ]
        )
        notes += [f"{name}: {w}" for w in d.get("warnings") or []]
    notes.append(
        "batch-1 latency (ms) of each copy against this run's, timed side by side (PyTorch eager) "
        "when the copy was made; test accuracy change in points; cnnlab prune RUN --max-drop POINTS "
        "finds the largest sparsity within a drop"
    )
    return Table(
        "Pruned copies of this run (cnnlab prune)",
        [
            "pruned run",
            "sparsity",
            "non-zero params",
            "val accuracy",
            "test accuracy (change)",
            "batch 1 ms (pruned vs this run)",
            "speed-up",
            "fine-tuning epochs",
            "warnings",
        ],
        rows,
        notes,
    ).html()


def _data(files: RunFiles, run: RunRecord) -> str:
    splits = run.data.splits
    out = []
    if splits:
        out.append(_table(["Split", "Images"], [(name, split.count) for name, split in splits.items()], numeric=[1]))
        classes = list(dict.fromkeys(c for split in splits.values() for c in split.per_class))
        if classes:
            rows = [[c] + [split.per_class.get(c, 0) for split in splits.values()] for c in classes[:MAX_CLASS_ROWS]]
            table = _table(["Class", *splits], rows, numeric=range(1, len(splits) + 1))
            if len(classes) > MAX_CLASS_ROWS:
                table += f'<p class="muted">… and {len(classes) - MAX_CLASS_ROWS} more classes (see figure).</p>'
            out.append(_folded(f"Images per class ({len(classes)} classes)", table))
    else:
        out.append(_missing("Split counts"))
    out += [_figure(files, "class_counts"), _figure(files, "samples"), _figure(files, "augmentation")]
    skipped = [(r.get("path", ""), r.get("reason", "")) for r in read_skipped(files)]
    if skipped:
        table = _table(["Path", "Reason"], skipped[:MAX_SKIPPED_ROWS])
        if len(skipped) > MAX_SKIPPED_ROWS:
            table += f'<p class="muted">… and {len(skipped) - MAX_SKIPPED_ROWS} more in {files.skipped.name}.</p>'
        out.append(_folded(f"Skipped files ({len(skipped)})", table))
    return "".join(out)


def _reproduce(files: RunFiles, run: RunRecord) -> str:
    command: Any = run.command
    if isinstance(command, list):  # older runs kept the arguments as a list
        command = shlex.join(map(str, command))
    out = [f"<p>To reproduce this run:</p><pre>{_e(command)}</pre>" if command else _missing("Command")]
    config, summary = read_text(files.config), read_text(files.summary)
    out.append(_folded("Config (config.yaml)", f"<pre>{_e(config)}</pre>") if config else _missing("config.yaml"))
    out.append(_folded("Model summary", f"<pre>{_e(summary)}</pre>") if summary else _missing("The model summary"))
    return "".join(out)


def redraw_missing_figures(files: RunFiles, run: RunRecord, metrics: dict[str, Any]) -> list[str]:
    """Draws the figures that metrics.csv, metrics.json and run.json can rebuild, if they are missing.

    Image grids need the images, so they are not redrawn. Returns problems worth showing.
    """
    test = _object(metrics.get("test"))
    names = list(run.class_names or (test.get("per_class") or {}).keys())
    counts = run.data.class_counts()
    jobs: list[tuple[str, Callable[[], Any]]] = [("history", lambda: draw_history(files))]
    if counts:
        jobs.append(("class_counts", lambda: plot_class_counts(counts, files.figure("class_counts"))))
    if test.get("confusion_matrix") is not None and test.get("per_class") and names:
        jobs.append(("results", lambda: draw_metric_figures(files, test, names, only_missing=True)))
    notes = []
    for key, job in jobs:
        if key in FIGURES and files.figure(key).exists():
            continue
        try:
            job()
        except (ValueError, KeyError, TypeError, OSError) as exc:  # a damaged file must not stop the page
            notes.append(f"could not draw {key}: {exc}")
    return notes


def write_report(run_dir: Path | str, regenerate: bool = True) -> Path:
    """Builds the run folder's ``report.html`` from its files.

    Args:
        run_dir: a run folder (must contain run.json).
        regenerate: first draw, into the run folder, missing figures that metrics.csv, metrics.json
            and run.json can rebuild (history, confusion matrices, per-class, most confused, counts).

    Returns:
        The path of the written report.
    """
    files = open_run(run_dir)
    run = read_record(files)
    metrics = read_optional_json(files.metrics_json)
    notes = redraw_missing_figures(files, run, metrics) if regenerate else []
    bodies = {
        "summary": _summary(run, metrics),
        "training": _training(files, run),
        "results": _results(files, metrics),
        "explain": _explain(files),
        "deployment": _deployment(files),
        "data": _data(files, run),
        "reproduce": _reproduce(files, run),
    }
    title = f"cnnlab run: {run.name if run.name is not None else files.root.name}"
    shown = [(sid, label) for sid, label in SECTIONS if bodies[sid] or sid not in OPTIONAL_SECTIONS]
    nav = "".join(f'<a href="#{sid}">{_e(label)}</a>' for sid, label in shown)
    parts = [
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>',
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head><body>',
        f"<h1>{_e(title)}</h1><nav>{nav}</nav>",
        *(f'<p class="banner">{_e(n)}</p>' for n in notes),
        *(f'<section id="{sid}"><h2>{_e(label)}</h2>{bodies[sid]}</section>' for sid, label in shown),
        f'<p class="muted">Generated by cnnlab {_e(run.cnnlab_version or "")} from {_e(files.root.name)}.</p>',
        "</body></html>\n",
    ]
    atomic_write_text(files.report, "\n".join(parts))
    return files.report
