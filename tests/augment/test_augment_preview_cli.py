"""Preview grids and the ``augment preview`` command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.augment import resolve_augment
from cnnlab.augment.preview import LESSON_TITLES, lesson_panels, lesson_preview, preset_preview
from cnnlab.cli import augment_cmd
from cnnlab.errors import CnnlabError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def digit(size: int = 28) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    img[6:22, 12:16] = 255
    img[6:9, 8:16] = 255
    return img


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_lesson_panels_are_the_lessons_eight() -> None:
    panels = lesson_panels(digit())
    assert [t for t, _ in panels] == list(LESSON_TITLES)
    assert len(panels) == 8 and LESSON_TITLES[1] == "Rotation (30°)"
    assert all(img.shape == (1, 28, 28) for _, img in panels)


def test_lesson_preview_writes_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    assert is_png(lesson_preview(rgb, tmp_path / "sub" / "grid.png"))


def test_preset_preview_writes_png(tmp_path: Path) -> None:
    out = preset_preview([digit(), digit(20)], resolve_augment("strong"), 3, tmp_path / "p.png", seed=1)
    assert is_png(out)


def cli() -> argparse.ArgumentParser:
    """A stand-in for the main CLI: only the augment command."""
    parser = argparse.ArgumentParser(prog="cnnlab")
    augment_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: list[str]) -> int:
    args = cli().parse_args(argv)
    return args.func(args)


def test_cli_preview_image_with_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.fromarray(digit()).save(tmp_path / "d.png")
    out = tmp_path / "aug.png"
    assert run(["augment", "preview", str(tmp_path / "d.png"), "--out", str(out), "--preset", "production",
                "--draws", "2"]) == 0
    assert is_png(out) and is_png(tmp_path / "aug_production.png")
    assert str(out) in capsys.readouterr().out


def test_cli_preview_folder_warns_on_digit_vflip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for cls in ("6", "9"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(digit()).convert("RGB").save(tmp_path / "data" / cls / "x.jpg")
    out = tmp_path / "f.png"
    assert run(["augment", "preview", str(tmp_path / "data"), "--out", str(out), "--vflip", "--draws", "2"]) == 0
    assert is_png(out)
    assert "--vflip on digits" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["missing.png"], "does not exist"),
    (["."], "--out must end in .png"),
    ([".", "--preset", "leson"], "--preset must be one of .*did you mean 'lesson'"),
    ([".", "--rotation", "400"], "--rotation must be between 0 and 180"),
])
def test_cli_preview_errors(argv: list[str], message: str, tmp_path: Path) -> None:
    out = "x.jpg" if message.startswith("--out") else str(tmp_path / "x.png")
    with pytest.raises(CnnlabError, match=message):
        run(["augment", "preview", str(tmp_path / argv[0]), "--out", out, *argv[1:]])
    assert not (tmp_path / "x.png").exists()  # nothing written on a bad value


def test_train_flags_override_the_preset() -> None:
    parser = argparse.ArgumentParser()
    augment_cmd.add_augment_arguments(parser)
    args = parser.parse_args(["--augment", "production", "--no-hflip", "--rotation", "5", "--brightness",
                              "0.9", "1.1", "--policy", "none", "--mixup", "0.2"])
    cfg = augment_cmd.augment_config_from_args(args)
    assert (cfg.hflip, cfg.rotation, cfg.brightness, cfg.policy, cfg.mixup) == (False, 5.0, (0.9, 1.1), None, 0.2)
    assert cfg.shear == pytest.approx(8.6)  # untouched flags come from the preset
    assert augment_cmd.augment_config_from_args(parser.parse_args([])) == resolve_augment("none")


def test_train_flag_out_of_range_names_the_flag() -> None:
    parser = argparse.ArgumentParser()
    augment_cmd.add_augment_arguments(parser)
    with pytest.raises(CnnlabError, match="--rotation must be between 0 and 180, got 400"):
        augment_cmd.augment_config_from_args(parser.parse_args(["--rotation", "400"]))
