"""The HTML report, run history loading, run comparison and their CLI commands, on fake run folders."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, expect

from cnnlab.cli import report_cmd
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import figures as F
from cnnlab.evaluation.metrics import classification_report_text, compute_metrics
from cnnlab.evaluation.report import OPTIONAL_SECTIONS, SECTIONS, write_report
from cnnlab.evaluation.runs_summary import compare_runs
from cnnlab.figures import DPI, plot_samples_per_class
from cnnlab.training.history import load_history

NAMES = ["circle", "square", "triangle"]
SECTION_IDS = [sid for sid, _ in SECTIONS if sid not in OPTIONAL_SECTIONS]
# As cnnlab's history logger writes it: the stage on every row, each stage counting its epochs
# from 0, validation and training metrics of one epoch on separate rows.
METRICS_CSV = """stage,epoch,step,lr,train_acc,train_loss,val_acc,val_loss
frozen,0,4,,,,0.50,1.10
frozen,0,4,0.001,0.40,1.30,,
frozen,1,9,,,,0.70,0.80
frozen,1,9,0.001,0.65,0.90,,
finetune,0,14,,,,0.80,0.60
finetune,0,14,0.0001,0.75,0.70,,
"""


def make_run(root: Path, name: str = "run-a", full: bool = True, status: str = "completed") -> Path:
    """A run folder like the trainer writes; ``full=False`` is an interrupted run with run.json only."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    rng = np.random.default_rng(len(name))
    y = rng.integers(0, 3, 30)
    probs = rng.dirichlet(np.ones(3), 30)
    probs[np.arange(30), y] += 0.5
    probs /= probs.sum(axis=1, keepdims=True)
    run = {
        "name": name,
        "created": "2024-05-01T12:00:00",
        "cnnlab_version": "0.1.0",
        "command": ["cnnlab", "train", "--data", "shapes", "--model", "simple_cnn", "--epochs", "3"],
        "status": status,
        "class_names": NAMES,
        "preprocess": {"image_size": 16, "channels": 3, "mean": [0.5] * 3, "std": [0.25] * 3},
        "data": {
            "source": "shapes <demo>",
            "skipped": 1,
            "splits": {
                "train": {"count": 90, "per_class": {"circle": 30, "square": 30, "triangle": 30}},
                "val": {"count": 15, "per_class": {"circle": 5, "square": 5, "triangle": 5}},
                "test": {"count": 30, "per_class": {"circle": 9, "square": 11, "triangle": 10}},
            },
        },
        "model": {"name": "simple_cnn", "params_total": 12345, "params_trainable": 2345},
        "stages": [
            {"name": "frozen", "epochs": 2, "seconds": 3.5, "best_val_acc": 0.7, "test_acc": 0.68, "done": True},
            {"name": "finetune", "epochs": 1, "seconds": 2.0, "best_val_acc": 0.8, "test_acc": 0.77, "done": True},
        ],
        "timing": {"train_seconds": 5.5, "total_seconds": 7.25},
    }
    (run_dir / "run.json").write_text(json.dumps(run))
    if not full:
        return run_dir
    (run_dir / "metrics.json").write_text(json.dumps({"test": compute_metrics(y, probs, NAMES), "extra": 1}))
    (run_dir / "metrics.csv").write_text(METRICS_CSV)
    (run_dir / "config.yaml").write_text("model:\n  name: simple_cnn\ntrain:\n  epochs: 3\n")
    (run_dir / "model_summary.txt").write_text("Layer (type)   Output Shape   Param #\nConv2d-1  [8, 16, 16]  224\n")
    (run_dir / "classification_report.txt").write_text(classification_report_text(y, probs.argmax(1), NAMES))
    (run_dir / "skipped_files.csv").write_text("path,reason\nbad/<script>alert(1)</script>.png,not an image\n")
    images = rng.integers(0, 256, (30, 3, 16, 16), dtype=np.uint8)
    plot_samples_per_class(images, y, NAMES, run_dir / "samples.png", per_class=3)
    F.plot_reliability(y, probs, run_dir / "reliability.png")
    wrong = np.flatnonzero(probs.argmax(1) != y)[:4]
    F.plot_misclassified(
        images[wrong], y[wrong], probs.argmax(1)[wrong], probs.max(1)[wrong], NAMES, run_dir / "misclassified.png"
    )
    return run_dir


def test_report_has_every_section_inline_images_and_no_network(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    page = write_report(run_dir).read_text(encoding="utf-8")
    for sid in SECTION_IDS:
        assert f'<section id="{sid}"><h2>' in page
    assert not re.search(r"https?://", page) and "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "shapes &lt;demo&gt;" in page  # escaped
    # 3 written by make_run + 6 the report redrew from metrics.csv, metrics.json and run.json.
    assert page.count('src="data:image/png;base64,') == 9
    for name in (
        "history.png",
        "class_counts.png",
        "confusion_matrix.png",
        "confusion_matrix_normalized.png",
        "per_class_accuracy.png",
        "most_confused.png",
    ):
        assert (run_dir / name).is_file() and f"({name})</figcaption>" in page
    assert "cnnlab train --data shapes --model simple_cnn --epochs 3" in page
    assert "finetune improved test accuracy from 68.00% to 77.00% (+9.00 points)" in page
    assert "epochs: 3" in page and "Conv2d-1" in page and "macro avg" in page
    assert "12,345 total" in page and "0:06" in page  # params and train time formatted
    # Results first: the numbers and curves, then the results, then data, then the folded details.
    assert (
        page.index('id="training"')
        < page.index('id="results"')
        < page.index('id="data"')
        < page.index('id="reproduce"')
    )
    assert page.index("(history.png)") < page.index("(confusion_matrix.png)") < page.index("(class_counts.png)")
    assert re.search(r"<details><summary>Config \(config.yaml\)</summary><pre>.*epochs: 3", page, re.DOTALL)
    assert re.search(r"<details><summary>Model summary</summary><pre>.*Conv2d-1", page, re.DOTALL)


def test_report_of_an_interrupted_run_with_only_run_json(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, full=False, status="interrupted")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert all(f'id="{sid}"' in page for sid in SECTION_IDS)
    assert "interrupted" in page and "not available" in page
    assert "77.00%" in page  # test accuracy falls back to the last stage's
    with pytest.raises(CnnlabError, match="not found"):
        write_report(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnlabError, match="not a cnnlab run folder"):
        write_report(tmp_path / "empty")


def test_load_history_merges_rows_and_puts_stages_one_after_another(tmp_path: Path) -> None:
    hist = load_history(make_run(tmp_path) / "metrics.csv")
    assert list(hist.columns) == [
        "epoch",
        "stage",
        "stage_epoch",
        "train_loss",
        "train_acc",
        "val_loss",
        "val_acc",
        "lr",
    ]
    # Numbered from 1, as the console and the report number epochs (the file keeps Lightning's 0-based count).
    assert hist["epoch"].tolist() == [1, 2, 3] and hist["stage_epoch"].tolist() == [1, 2, 1]
    assert hist["val_acc"].tolist() == [0.5, 0.7, 0.8] and hist["train_acc"].tolist() == [0.4, 0.65, 0.75]
    assert hist["lr"].tolist() == [0.001, 0.001, 0.0001]
    assert hist["stage"].tolist() == ["frozen", "frozen", "finetune"]
    assert load_history(make_run(tmp_path, "empty", full=False) / "metrics.csv").empty


def test_compare_runs_and_cli(cli, tmp_path: Path) -> None:
    a, b = make_run(tmp_path, "run-a"), make_run(tmp_path, "run-b", full=False)
    rows, png = compare_runs([a, b], tmp_path / "cmp")
    assert [r["run"] for r in rows] == ["run-a", "run-b"]
    assert rows[0]["epochs"] == 3 and rows[0]["kept_val_acc"] == 0.8 and rows[0]["params"] == 12345
    assert rows[1]["epochs"] is None and rows[1]["test_acc"] == 0.77 and rows[1]["kept_val_acc"] is None
    with Image.open(png) as img:
        assert img.size == (round(11 * DPI), round(4.2 * DPI))
    assert (tmp_path / "cmp" / "comparison.csv").read_text().startswith("run,model,data,epochs")

    code, out, _ = cli("runs", "compare", a, b, "--out", tmp_path / "cli")
    assert code == 0
    assert "run-a" in out and "run-b" in out and "comparison.png" in out
    assert (tmp_path / "cli" / "comparison.png").stat().st_size > 0
    with pytest.raises(CnnlabError, match="not-a-run"):
        compare_runs([a, tmp_path / "not-a-run"], tmp_path / "x")
    code, out, _ = cli("runs", "compare", a, b, "--out", tmp_path / "cli", "--format", "json")
    assert code == 0 and [r["run"] for r in json.loads(out)] == ["run-a", "run-b"]


def test_report_cli_and_open(cli, tmp_path: Path, monkeypatch) -> None:
    # A path longer than a terminal line: in a pipe it must come out whole, never broken by a newline.
    run_dir = make_run(tmp_path / "a-folder-whose-name-alone-is-longer-than-half-of-an-eighty-column-line", full=False)
    opened: list[str] = []
    monkeypatch.setattr(report_cmd.webbrowser, "open", lambda uri: opened.append(uri) or False)
    code, out, _ = cli("report", run_dir, "--open")
    assert code == 0
    assert f"Report written to {run_dir / 'report.html'}\n" in out
    assert f"No web browser available here: open {run_dir / 'report.html'} yourself." in out
    assert opened and opened[0].startswith("file://")


def test_report_renders_in_chromium(tmp_path: Path, page: Page) -> None:
    report = write_report(make_run(tmp_path))
    page.set_viewport_size({"width": 1200, "height": 3000})
    page.goto(report.as_uri())
    for sid in SECTION_IDS:
        expect(page.locator(f"#{sid}")).to_have_count(1)
    shot = page.screenshot(path=tmp_path / "shot.png")
    with Image.open(io.BytesIO(shot)) as img:
        assert img.size == (1200, 3000) and img.getextrema() != ((255, 255),) * len(img.getbands())


def test_report_says_which_stage_weights_were_kept_and_why(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, full=False, status="trained")
    run = json.loads((run_dir / "run.json").read_text())
    why = (
        "weights of stage 'frozen' kept: stage 'finetune' did not lower the validation loss "
        "(0.6100 at best, against 0.4900)"
    )
    run["kept"] = {"stage": "frozen", "why": why}
    (run_dir / "run.json").write_text(json.dumps(run))
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "Weights of stage &#x27;frozen&#x27; kept: stage &#x27;finetune&#x27; did not lower" in page


def _two_stage_record(run_dir: Path, kept: str) -> None:
    """Stage records as the trainer writes them: each stage's trainable count and the figures of
    its kept epoch (val_at_best); ``kept``: the stage whose weights the run ended with."""
    run = json.loads((run_dir / "run.json").read_text())
    run["model"]["params_trainable"] = 345  # counted as built, i.e. with stage 1's frozen base
    run["stages"] = [
        {
            "name": "frozen",
            "epochs": 2,
            "seconds": 3.5,
            "params_trainable": 345,
            "test_acc": 0.68,
            "val_at_best": {"epoch": 1, "accuracy": 0.55, "loss": 0.9, "errors": 9, "images": 20},
        },
        {
            "name": "finetune",
            "epochs": 1,
            "seconds": 2.0,
            "params_trainable": 9876,
            "test_acc": 0.77,
            "replaced_best": kept == "finetune",
            "val_at_best": {"epoch": 1, "accuracy": 0.65, "loss": 0.6, "errors": 7, "images": 20},
        },
    ]
    run["kept"] = {"stage": kept, "why": f"weights of stage '{kept}' kept"}
    (run_dir / "run.json").write_text(json.dumps(run))


def test_report_gives_each_stages_trainable_parameters(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    _two_stage_record(run_dir, "finetune")
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert "12,345 total; trained: 345 in stage frozen, 9,876 in stage finetune (kept)" in page
    assert "345 trainable" not in page  # stage 1's count alone is not what the kept model trained
    table = page[page.index("<th>Stage</th>") :]
    assert "<th>Trainable parameters</th>" in table and "<th>Val acc (kept epoch)</th>" in table
    assert re.search(r"<td>finetune \(kept\)</td><td[^>]*>1</td><td[^>]*>9,876</td>", table)
    one_stage = make_run(tmp_path, "single")
    run = json.loads((one_stage / "run.json").read_text())
    run["stages"] = [{"name": "train", "epochs": 3, "seconds": 5.5, "params_trainable": 12345, "test_acc": 0.7}]
    (one_stage / "run.json").write_text(json.dumps(run))
    assert "12,345 total, 12,345 trainable" in write_report(one_stage).read_text(encoding="utf-8")


def test_compare_shows_the_kept_models_validation_accuracy(cli, tmp_path: Path, monkeypatch) -> None:
    """Not the best of any epoch (metrics.csv peaks at 80%), but the epoch whose weights were kept."""
    monkeypatch.setenv("COLUMNS", "200")  # the whole table, as on a wide terminal
    kept_frozen, kept_finetune = make_run(tmp_path, "kept-frozen"), make_run(tmp_path, "kept-finetune")
    _two_stage_record(kept_frozen, "frozen")
    _two_stage_record(kept_finetune, "finetune")
    rows, _ = compare_runs([kept_frozen, kept_finetune], tmp_path / "cmp")
    assert [r["kept_val_acc"] for r in rows] == [0.55, 0.65]
    code, out, _ = cli("runs", "compare", kept_frozen, kept_finetune, "--out", tmp_path / "cli")
    assert code == 0 and "Val acc (kept)" in out and "55.00%" in out and "65.00%" in out
    assert "80.00%" not in out
    # A run from before stages recorded their kept epoch: the kept stage's epoch of lowest validation
    # loss (the frozen stage's 2nd epoch here: loss 0.80, accuracy 70%), not the stage's best accuracy.
    old = make_run(tmp_path, "old")
    run = json.loads((old / "run.json").read_text())
    run["kept"] = {"stage": "frozen"}
    (old / "run.json").write_text(json.dumps(run))
    (old / "metrics.csv").write_text(
        METRICS_CSV.replace("frozen,1,9,,,,0.70,0.80", "frozen,1,9,,,,0.60,0.80").replace(
            "frozen,0,4,,,,0.50,1.10", "frozen,0,4,,,,0.65,1.10"
        )
    )
    assert compare_runs([old], tmp_path / "old-cmp")[0][0]["kept_val_acc"] == 0.6


def test_no_improvement_is_claimed_for_an_unfinished_fine_tuning() -> None:
    from cnnlab.evaluation.report import _improvement
    from cnnlab.training.record import StageRecord

    frozen = StageRecord(name="frozen", test_acc=0.68, done=True)
    assert "+9.00 points" in _improvement([frozen, StageRecord(name="finetune", test_acc=0.77, done=True)])
    assert _improvement([frozen, StageRecord(name="finetune", test_acc=0.77)]) == ""  # interrupted in stage 2
