"""One output for every ``--format``: whole values in a pipe, a hint on a narrow terminal, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from cnnlab.cli.output import print_output, print_table
from cnnlab.errors import plural, suggest
from cnnlab.tables import Table

LONG = "a_really_long_value_" * 8  # 160 characters: wider than any default terminal


def _table() -> Table:
    return Table("Runs", ["run", "accuracy"], [[LONG, "96.72%"], ["short", "-"]], notes=["a note"], data={"x": 1})


def test_a_pipe_gets_each_value_whole_on_one_line(capsys) -> None:
    print_output(_table(), "table")  # captured stdout is not a terminal, as in a pipe
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if LONG in line)
    assert "96.72%" in line and "…" not in out
    assert "- a note" in out


def test_a_narrow_terminal_folds_values_and_names_csv_and_json() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=60, color_system=None)
    print_table(Table("Runs", ["run"], [[LONG]]), hint=True, console=console)
    out = buffer.getvalue()
    assert "…" not in out  # folded onto more lines, never cut
    letters = "".join(char for char in out if char.isalnum() or char == "_")  # without borders and line ends
    assert letters.count(LONG) == 1  # all of it is there, across lines
    assert "--format csv or --format json" in out


def test_a_table_that_fits_the_terminal_gives_no_hint() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    print_table(_table(), hint=True, console=console)
    assert "--format" not in buffer.getvalue()


def test_json_and_csv_of_a_table_and_of_records(capsys) -> None:
    print_output(_table(), "json")
    assert json.loads(capsys.readouterr().out)["rows"][0] == [LONG, "96.72%"]
    print_output(_table(), "csv")
    assert list(csv.reader(io.StringIO(capsys.readouterr().out))) == [
        ["run", "accuracy"],
        [LONG, "96.72%"],
        ["short", "-"],
    ]
    records = [{"run": "a", "test_acc": 0.5}, {"run": "b", "test_acc": None}]
    print_output(_table(), "csv", records=records)
    assert capsys.readouterr().out.splitlines() == ["run,test_acc", "a,0.5", "b,"]
    print_output(_table(), "json", records=records)
    assert json.loads(capsys.readouterr().out) == records


def test_predict_through_a_real_pipe_keeps_long_paths_and_shows_only_the_classes_there_are(
    trained_shapes, tmp_path: Path
) -> None:
    run, shapes = trained_shapes
    deep = tmp_path / ("nested_folder_with_a_long_name_" * 3) / "photos_of_the_experiment_1030_session"
    deep.mkdir(parents=True)
    image = Path(shutil.copy(shapes / "left" / "img_000.png", deep / "left_bar_example_image_number_1030.png"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "predict", str(run), str(image)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    line = next((line for line in result.stdout.splitlines() if str(image) in line), None)
    assert line is not None, result.stdout  # the whole path on one line, not "…/1030…"
    assert "left (" in line
    header = next(line for line in result.stdout.splitlines() if "image" in line)
    assert "#3" in header and "#4" not in header  # the default top-5 capped at the run's 3 classes


def test_predict_default_k_is_capped_at_the_classes_in_every_format(cli, trained_shapes) -> None:
    run, shapes = trained_shapes
    code, out, err = cli("predict", run, shapes / "left" / "img_000.png", "--format", "json")
    assert code == 0, err
    assert len(json.loads(out)[0]["top"]) == 3
    code, out, err = cli("predict", run, shapes / "left" / "img_000.png", "--format", "csv", "--top-k", "1")
    assert out.splitlines()[0] == "image,rank,class,probability,error,runtime" and len(out.splitlines()) == 2


def test_runs_compare_in_a_pipe_does_not_split_names(cli, trained_shapes, tmp_path: Path) -> None:
    named = Path(shutil.copytree(trained_shapes[0], tmp_path / "efficientnet_lite0-a_run_with_a_long_descriptive_name"))
    code, out, err = cli("runs", "compare", named, trained_shapes[0], "--out", tmp_path / "comparison")
    assert code == 0, err
    assert named.name in out and "2 runs" in out


def test_counts_in_messages_agree_with_their_number() -> None:
    assert plural(1, "epoch") == "1 epoch" and plural(3, "epoch") == "3 epochs" and plural(0, "run") == "0 runs"
    assert plural(1, "class", "classes") == "1 class" and plural(2, "class", "classes") == "2 classes"
    from cnnlab.comparison.training import _stage_text

    assert _stage_text("train", 1, 0.01) == "every layer: up to 1 epoch at lr 0.01"


def test_a_case_only_mismatch_says_so() -> None:
    assert suggest("Ants", ["ants", "bees"]) == "; did you mean ants? (names are case-sensitive)"
    assert suggest("sobel", ["vertical", "sobel-v", "sobel-h"]) == "; did you mean sobel-v?"
    assert suggest("zzz", ["ants"], "its classes: ants") == "; its classes: ants"
