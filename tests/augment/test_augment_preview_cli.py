"""Preview grids and the ``augment preview`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.augment.preview import LESSON_TITLES, lesson_panels, lesson_preview, preset_preview
from cnnlab.config import resolve_augment

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


def test_cli_preview_image_with_preset(cli, tmp_path: Path) -> None:
    Image.fromarray(digit()).save(tmp_path / "d.png")
    code, out, err = cli("augment", "preview", tmp_path / "d.png", "--out", tmp_path / "o", "--augment", "production",
                         "--draws", "2")
    assert code == 0, err
    grid, draws = tmp_path / "o" / "augmentation.png", tmp_path / "o" / "augmentation_draws.png"
    assert is_png(grid) and is_png(draws) and str(grid) in out and str(draws) in out


def test_cli_preview_folder_warns_on_digit_vflip(cli, tmp_path: Path) -> None:
    for cls in ("6", "9"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(digit()).convert("RGB").save(tmp_path / "data" / cls / "x.jpg")
    code, _, err = cli("augment", "preview", tmp_path / "data", "--out", tmp_path, "--vflip", "--draws", "2")
    assert code == 0, err
    assert is_png(tmp_path / "augmentation_draws.png")
    assert "--vflip on digits" in err


@pytest.mark.parametrize("argv, message", [
    (["missing.png"], "does not exist"),
    (["not-an-image.png"], "could not be read as an image"),
    ([".", "--augment", "leson"], "unknown --augment 'leson'; did you mean lesson?"),
    ([".", "--rotation", "400"], "--rotation must be between 0 and 180"),
    ([".", "--draws", "40"], "--draws must be between 1 and 16"),
])
def test_cli_preview_errors(cli, argv: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    code, _, err = cli("augment", "preview", tmp_path / argv[0], "--out", tmp_path / "o", *argv[1:])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing written on a bad value
