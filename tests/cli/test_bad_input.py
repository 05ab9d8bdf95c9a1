"""Every bad input is one line naming the problem and the fix, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(np.full((12, 12, 3), i * 10, dtype=np.uint8)).save(folder / f"{i}.png")


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _one_class(tmp: Path) -> Path:
    _images(tmp / "one" / "cats", 10)
    return tmp / "one"


def _too_few(tmp: Path) -> Path:
    _images(tmp / "few" / "cats", 10)
    _images(tmp / "few" / "dogs", 1)
    return tmp / "few"


def _only_in_test(tmp: Path) -> Path:
    _images(tmp / "split" / "train" / "cats", 6)
    _images(tmp / "split" / "train" / "dogs", 6)
    _images(tmp / "split" / "test" / "birds", 2)
    return tmp / "split"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


CASES = [
    ("missing path", lambda t: ["train", t / "nope"], "not found"),
    ("built-in set miscased", lambda t: ["train", "MNIST"], "'MNIST' not found; did you mean mnist? (names are case"),
    ("built-in set mistyped", lambda t: ["train", "cifar-10"], "did you mean cifar10?"),
    ("empty folder", lambda t: ["train", _empty(t)], "no images found"),
    ("one class only", lambda t: ["train", _one_class(t)], "at least 2"),
    ("too few to split", lambda t: ["train", _too_few(t)], "'dogs'"),
    ("class only in test", lambda t: ["train", _only_in_test(t)], "'birds'"),
    ("unknown model", lambda t: ["train", "digits", "--model", "resnt50"], "did you mean resnet50"),
    ("unknown option", lambda t: ["train", "digits", "--epoch", "3"], "did you mean --epochs"),
    ("bad learning rate", lambda t: ["train", "digits", "--lr", "-1"], "--lr"),
    ("bad dropout", lambda t: ["train", "digits", "--dropout", "1.5"], "--dropout"),
    ("bad split", lambda t: ["train", "digits", "--val-split", "lots"], "--val-split"),
    ("no validation", lambda t: ["train", "digits", "--val-split", "0"], "--val-split 0 holds out no image"),
    (
        "bad config key",
        lambda t: ["train", "digits", "--config", _yaml(t, "train:\n  epoch: 3\n")],
        "did you mean epochs",
    ),
    (
        "bad config value",
        lambda t: ["train", "digits", "--config", _yaml(t, "transfer:\n  frozen_epochs: -1\n")],
        "--frozen-epochs must be at least 0",
    ),
    ("mistyped choice", lambda t: ["train", "digits", "--optimizer", "adamm"], "did you mean adam"),
    (
        "unknown crop mode",
        lambda t: ["train", "digits", "--crop-mode", "stretch"],
        "unknown --crop-mode 'stretch'; choose from center, squash, border",
    ),
    ("unknown recipe", lambda t: ["train", "digits", "--recipe", "fsat"], "did you mean fast"),
    ("missing run folder", lambda t: ["evaluate", t / "runs" / "nope"], "not found"),
    ("not a run folder", lambda t: ["evaluate", _empty(t)], "not a cnnlab run"),
    ("unknown command", lambda t: ["trian"], "unknown command 'trian'; did you mean train?"),
    ("unknown sub-command", lambda t: ["data", "inspekt", "x"], "did you mean inspect"),
    ("mistyped strategy", lambda t: ["train", "digits", "--strategy", "dpp"], "did you mean ddp"),
    ("no nodes", lambda t: ["train", "digits", "--num-nodes", "0"], "--num-nodes must be at least 1"),
    (
        "nodes without a launcher",
        lambda t: ["train", "digits", "--accelerator", "cpu", "--num-nodes", "2"],
        "start the same command on each machine",
    ),
    pytest.param(
        "no such accelerator",
        lambda t: ["train", "digits", "--accelerator", "cuda", "--devices", "2"],
        "--accelerator cuda --devices 2",
        marks=pytest.mark.skipif(_has_cuda(), reason="a GPU is here"),
    ),
]


def _yaml(tmp: Path, text: str) -> Path:
    path = tmp / "bad.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "name,argv,expected", CASES, ids=[c.values[0] if hasattr(c, "values") else c[0] for c in CASES]
)
def test_bad_input_is_one_clear_line(cli, tmp_path, name, argv, expected):
    code, out, err = cli(*argv(tmp_path))
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning:")]
    assert len(lines) == 1, err
    assert expected in lines[0], lines[0]


def test_a_mistyped_data_argument_is_refused_before_torch_is_imported() -> None:
    """A typo is told at once, not after the seconds a training command spends importing."""
    import subprocess
    import sys

    probe = (
        "import sys; from cnnlab.cli.main import main; "
        "code = main(['train', 'MNIST']); print(code, 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "did you mean mnist?" in done.stderr and done.stderr.count("\n") == 1
