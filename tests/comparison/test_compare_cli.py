"""``cnnlab compare``: a table and files for every model, a row for the ones that fail, training with --data."""

from __future__ import annotations

import csv
import json

from cnnlab.comparison.architectures import CompareSettings, compare_architectures
from cnnlab.config import build_config
from conftest import png_size, read_json


def test_compare_measures_writes_the_files_and_keeps_an_unknown_model_as_a_row(cli, tmp_path):
    out = tmp_path / "cmp"
    code, stdout, err = cli(
        "compare",
        "simple_cnn",
        "resnet5x",
        "--image-size",
        "28",
        "--batch-size",
        "4",
        "--repeats",
        "3",
        "--threads",
        "1",
        "--out",
        out,
    )
    assert code == 0, err
    assert "simple_cnn" in stdout and "353.32 k" in stdout  # its parameters, in the terminal table
    assert "resnet5x: unknown model 'resnet5x'; did you mean" in stdout
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [(r["model"], r["status"]) for r in rows] == [("simple_cnn", "ok"), ("resnet5x", "error")]
    measured = rows[0]
    assert int(measured["params_total"]) == 353_320 and int(measured["macs"]) > 0
    assert float(measured["latency_ms"]) > 0 and float(measured["throughput"]) > 0
    assert float(measured["size_mb"]) > 1.4  # 353,320 FP32 weights
    assert measured["memory_mb"] != ""  # measured in its own process (Linux)
    assert "did you mean" in rows[1]["note"]
    markdown = (out / "comparison.md").read_text()
    assert "| simple_cnn | random | 353.32 k |" in markdown and "How each figure was measured" in markdown
    assert "FlopCounterMode" in markdown and "fresh Python process" in markdown
    assert png_size(out / "comparison.png")[0] > 1500


def test_compare_with_data_trains_each_model_into_a_run_folder(cli, shapes_folder, tmp_path, one_torch_thread):
    out = tmp_path / "cmp"
    config = build_config(data=str(shapes_folder), epochs=1, batch_size=16)
    settings = CompareSettings(image_size=20, batch_size=4, repeats=3, isolate=False)  # in-process: quicker
    comparison = compare_architectures(["simple_cnn", "fast_cnn"], settings, "test", out, config)
    result = json.loads(json.dumps(comparison.as_json()))  # what --format json prints
    assert "seed 42" in result["trained_the_same_way"] and "at most 1 epoch each" in result["trained_the_same_way"]
    for row in result["rows"]:
        assert 0 <= row["test_acc"] <= 1 and row["epochs"] == 1 and row["train_seconds"] > 0
        assert row["trained_from"] == "from scratch"
        run = out / "runs" / row["model"]
        assert row["run"] == str(run) and read_json(run / "run.json")["status"] == "completed"
    code, _, err = cli(
        "runs", "compare", out / "runs" / "simple_cnn", out / "runs" / "fast_cnn", "--out", tmp_path / "rc"
    )
    assert code == 0, err  # normal run folders
    header = next(line for line in (out / "comparison.md").read_text().splitlines() if line.startswith("| model"))
    assert "test acc" in header and "train time" in header


def test_compare_refuses_training_options_without_data_and_bad_weights_pairs(cli):
    code, _, err = cli("compare", "simple_cnn", "--epochs", "3")
    assert code == 2 and "--epochs only applies to training; add --data DATA" in err
    code, _, err = cli("compare", "simple_cnn", "--weights", "simple_cnn")
    assert code == 2 and "--weights takes MODEL=FILE" in err
    code, _, err = cli("compare", "simple_cnn", "--weights", "vgg16=x.pth")
    assert code == 2 and "--weights names 'vgg16', which is not among the compared models" in err


def test_a_comparison_timed_on_a_busy_machine_says_rerun_in_every_output(tmp_path, monkeypatch, one_torch_thread):
    from cnnlab.comparison import architectures

    monkeypatch.setattr(architectures, "busy_machine", lambda others, latency: "other processes kept 1.0 cores busy")
    settings = CompareSettings(image_size=20, batch_size=2, repeats=3, isolate=False, threads=1)
    comparison = compare_architectures(["simple_cnn", "fast_cnn"], settings, "test", tmp_path / "busy")
    assert comparison.busy and comparison.as_json()["busy_machine"] == comparison.busy
    assert "Measured on a busy machine: rerun" in (tmp_path / "busy" / "comparison.md").read_text()
    assert "busy machine" in comparison._repr_html_()
    rows = list(csv.DictReader((tmp_path / "busy" / "comparison.csv").open()))
    assert all(float(r["latency_min_ms"]) <= float(r["latency_ms"]) for r in rows)  # the fastest beside the median
