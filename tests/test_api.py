"""The Python API: the same runs as the command line, a Run over a folder, predictions on any image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cnnlab
from cnnlab.config import all_options, build_config
from cnnlab.errors import CnnlabError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTIONS = ["--epochs", "2", "--batch-size", "64", "--deterministic", "--seed", "3"]


@pytest.fixture(scope="module")
def twin_runs(tmp_path_factory) -> tuple[Path, Path]:
    """The same training from the command line and from Python."""
    from cnnlab.cli.main import main

    runs = tmp_path_factory.mktemp("api") / "runs"
    assert main(["train", "digits", *OPTIONS, "--runs-dir", str(runs), "--name", "cli"]) == 0
    run = cnnlab.train("digits", epochs=2, batch_size=64, deterministic=True, seed=3, runs_dir=str(runs), name="api")
    return runs / "cli", run.path


def test_the_api_and_the_cli_make_the_same_run(twin_runs) -> None:
    cli_run, api_run = twin_runs
    assert (cli_run / "metrics.csv").read_text() == (api_run / "metrics.csv").read_text()
    assert json.loads((cli_run / "metrics.json").read_text()) == json.loads((api_run / "metrics.json").read_text())
    configs = [yaml.safe_load((run / "config.yaml").read_text()) for run in twin_runs]
    configs[0].pop("name"), configs[1].pop("name")
    assert configs[0] == configs[1]
    command = json.loads((api_run / "run.json").read_text())["command"]
    assert command.startswith("cnnlab.train('digits'") and "epochs=2" in command  # how to do it again


def test_a_run_reopens_with_its_results_history_and_figures(twin_runs) -> None:
    run = cnnlab.load_run(twin_runs[1])
    assert run.metrics["accuracy"] == pytest.approx(cnnlab.evaluate(run)["accuracy"])  # reproduces
    assert run.config.train.epochs == 2 and run.class_names == [str(d) for d in range(10)]
    assert list(run.history["epoch"]) == [1, 2] and run.history["val_acc"].notna().all()
    figure = run.plot_history()
    assert [ax.get_title() for ax in figure.axes] == ["Accuracy", "Loss", "Learning rate"] and figure.axes[0].lines
    figure = run.confusion_matrix(normalize=True)
    assert figure.axes[0].images  # the heat map
    page = run._repr_html_()
    assert "test accuracy" in page and page.count("data:image/png;base64,") == 2
    assert "test accuracy" in repr(run)


def test_predict_agrees_on_a_path_a_pil_image_and_an_array(twin_runs, tmp_path: Path) -> None:
    run = cnnlab.load_run(twin_runs[1])
    digit = (np.arange(64).reshape(8, 8) * 4).astype(np.uint8)
    Image.fromarray(digit).save(tmp_path / "digit.png")
    rows = run.predict([tmp_path / "digit.png", Image.fromarray(digit), digit, digit / 255.0], top_k=3)
    tops = [[(g["class"], round(g["probability"], 5)) for g in row["top"]] for row in rows]
    assert len(tops[0]) == 3 and tops[0] == tops[1] == tops[2] == tops[3]
    assert rows[0]["input"].endswith("digit.png") and all(row["error"] is None for row in rows)
    with pytest.raises(CnnlabError, match="image array must be"):
        run.predict(np.zeros((2, 3, 4, 5)))
    by_folder = cnnlab.predict(run.path, tmp_path, top_k=3)[0]["top"]  # a folder, by path
    assert [(g["class"], round(g["probability"], 5)) for g in by_folder] == tops[0]


@pytest.mark.parametrize(
    "spec",
    [
        s
        for s in all_options()
        if s.kind in ("int", "float") and (s.bounds["at_least"] is not None or s.bounds["above"] is not None)
    ],
    ids=lambda s: s.dest,
)
def test_every_option_is_a_keyword_with_the_flags_checks(spec) -> None:
    low = spec.bounds["at_least"] if spec.bounds["at_least"] is not None else spec.bounds["above"]
    with pytest.raises(CnnlabError) as by_keyword:
        cnnlab.train("digits", **{spec.dest: low - 1})
    with pytest.raises(CnnlabError) as by_config:
        build_config(data="digits", **{spec.dest: low - 1})
    assert str(by_keyword.value) == str(by_config.value) and spec.flag in str(by_keyword.value)


def test_errors_are_raised_not_exits(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="did you mean epochs"):
        cnnlab.train("digits", epoch=3)
    with pytest.raises(CnnlabError, match="not found"):
        cnnlab.load_run(tmp_path / "nope")
    assert cnnlab.configure("digits", recipe="fast", epochs=1).model.name == "fast_cnn_slim"


def test_the_api_names_stay_functions_once_every_package_is_loaded() -> None:
    import importlib
    import inspect

    for package in (
        "training.run_fit",
        "evaluation.run_evaluation",
        "comparison.options",
        "deploy.export",
        "serving.settings",
        "explain.commands",
        "tuning.study",
        "cleaning.issues",
        "training.find_rate",
    ):
        importlib.import_module(f"cnnlab.{package}")  # a subpackage named like a verb would now shadow it
    for name in (
        "train",
        "evaluate",
        "predict",
        "compare",
        "distill",
        "serve",
        "resume",
        "load_run",
        "lr_find",
        "label_issues",
        "tune",
    ):
        assert inspect.isfunction(getattr(cnnlab, name)), name
