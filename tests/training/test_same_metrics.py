"""Refactoring never changes what a run learns: deterministic runs give the recorded metrics, byte for byte.

The recorded files (tests/fixtures/same_metrics/) were written by the code before the core redesign
(issue 28). A from-scratch run and a two-stage transfer run on a small photo folder must give the same
metrics.csv and metrics.json; test_resume checks that a killed and resumed run equals the
from-scratch one (its reference is the "scratch" run here).

Floating-point sums depend on the CPU's vector instructions and the torch build, so byte equality
is asserted on the machine and torch the files were recorded with; elsewhere the numbers must agree
to 1e-4 (a changed method changes them far more). ``CNNLAB_RECORD_SAME_METRICS=1`` re-records them,
for a change that is meant to change results (say which and why in the commit).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.machine import cpu_name
from cnnlab.training.record import RunRecord
from conftest import write_photo_crops

RECORDED = Path(__file__).parent.parent / "fixtures" / "same_metrics"
FILES = ("metrics.csv", "metrics.json")
# One thread: a deterministic run keeps torch's current thread count, which in a test process is whatever
# an earlier test or the machine's load left, and float sums differ with it. test_resume.py trains with
# exactly these options; its resumed run must equal this recording.
SCRATCH = ["digits", "--epochs", "6", "--deterministic", "--seed", "3", "--batch-size", "16", "--threads", "1"]


def transfer_args(tmp_path: Path) -> list[str]:
    """A two-stage transfer run: simple_cnn started from a weights file on 60 small real photos."""
    from cnnlab.models import create_model

    torch.manual_seed(0)
    weights = tmp_path / "start.safetensors"
    save_file(create_model("simple_cnn", num_classes=2, in_chans=3, image_size=(48, 48)).state_dict(), weights)
    photos = write_photo_crops(tmp_path / "photos", per_class=30, side=64)
    return [
        str(photos),
        "--model",
        "simple_cnn",
        "--weights",
        str(weights),
        "--image-size",
        "48",
        "--crop-pct",
        "1",
        "--deterministic",
        "--seed",
        "2",
        "--frozen-epochs",
        "3",
        "--finetune-epochs",
        "2",
        "--finetune-lr",
        "1e-3",
        "--batch-size",
        "16",
    ]


def signature() -> dict[str, str]:
    return {"cpu": cpu_name(), "torch": torch.__version__}


def numbers(name: str, text: str) -> list[float | str]:
    """Every value of a metrics file in order, numbers as floats (for the tolerant comparison)."""
    if name.endswith(".json"):
        flat: list[float | str] = []

        def walk(value: object) -> None:
            if isinstance(value, dict):
                for key in value:
                    flat.append(str(key))
                    walk(value[key])
            elif isinstance(value, list):
                for item in value:
                    walk(item)
            else:
                flat.append(float(value) if isinstance(value, (int, float)) else str(value))

        walk(json.loads(text))
        return flat
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    out: list[float | str] = []
    for cell in cells:
        try:
            out.append(float(cell))
        except ValueError:
            out.append(cell)
    return out


def check_same(run: Path, recorded: Path) -> None:
    same_machine = json.loads((RECORDED / "recorded_on.json").read_text()) == signature()
    for name in FILES:
        now, then = (run / name).read_text(), (recorded / name).read_text()
        if same_machine:
            assert now == then, f"{name} differs from the recording in {recorded}"
        else:
            assert numbers(name, now) == pytest.approx(numbers(name, then), rel=1e-4, abs=1e-6), name


@pytest.mark.parametrize("kind", ["scratch", "transfer"])
def test_a_deterministic_run_gives_the_recorded_metrics(kind: str, tmp_path: Path, cli) -> None:
    args = SCRATCH if kind == "scratch" else transfer_args(tmp_path)
    code, _, err = cli("train", *args, "--runs-dir", tmp_path / "runs", "--name", kind)
    assert code == 0, err
    run = tmp_path / "runs" / kind
    if kind == "transfer":
        stages = [row["stage"] for row in csv.DictReader(io.StringIO((run / "metrics.csv").read_text()))]
        assert {"frozen", "finetune"} <= set(stages)  # really the two-stage path
    if os.environ.get("CNNLAB_RECORD_SAME_METRICS") == "1":
        (RECORDED / kind).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            shutil.copy(run / name, RECORDED / kind / name)
        (RECORDED / "recorded_on.json").write_text(json.dumps(signature(), indent=2) + "\n")
    check_same(run, RECORDED / kind)
    # run.json read through its types and written back is the file training wrote (keys, values, order)
    raw = json.loads((run / "run.json").read_text())
    assert json.dumps(RunRecord.from_json(raw).to_json(), indent=2) == json.dumps(raw, indent=2)
