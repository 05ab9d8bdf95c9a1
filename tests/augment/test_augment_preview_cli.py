"""Preview grids and the ``augment preview`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.augment.preview import lesson_panels, lesson_preview, preset_preview
from cnnlab.config import PRESETS, resolve_augment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def digit(size: int = 28) -> np.ndarray:
    img = np.zeros((size, size), np.uint8)
    img[6:22, 12:16] = 255
    img[6:9, 8:16] = 255
    return img


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_lesson_panels_are_the_lesson_presets_operations() -> None:
    panels = lesson_panels(digit())  # the lesson preset by default: what --augment lesson trains with
    assert [t for t, _ in panels] == [
        "Original",
        f"Rotation ({PRESETS['lesson']['rotation']:g}°)",
        "Horizontal flip",
        "Width shift (20%)",
        "Height shift (20%)",
        "Zoom (20%)",
        "Combined",
    ]
    assert panels[1][0] == "Rotation (20°)"
    assert all(img.shape == (1, 28, 28) for _, img in panels)


def test_panel_titles_and_values_come_from_the_config_used() -> None:
    cfg = resolve_augment("production", rotation=35, brightness=(0.5, 1.2), contrast=(0.8, 1.2))
    titles = [t for t, _ in lesson_panels(digit(), cfg)]
    assert "Rotation (35°)" in titles and "Shear (8.6°)" in titles
    assert "Brightness (×0.5–1.2)" in titles and "Contrast (±20%)" in titles
    white = np.full((28, 28), 255, np.uint8)
    darker = dict(lesson_panels(white, cfg))["Brightness (×0.5–1.2)"]
    assert darker.max().item() == pytest.approx(0.5)  # the range's end farther from 1
    assert [t for t, _ in lesson_panels(digit(), resolve_augment("none"))] == ["Original"]


@pytest.mark.parametrize("fill, corner", [("nearest", 1.0), ("constant", 0.0)])
def test_panels_fill_as_the_config_says(fill: str, corner: float) -> None:
    white = np.full((28, 28), 255, np.uint8)  # a rotated white square: its corners are filled in
    rotated = dict(lesson_panels(white, resolve_augment("lesson", fill_mode=fill)))["Rotation (20°)"]
    assert rotated[0, 0, 0].item() == pytest.approx(corner, abs=0.01)


def test_cli_grid_is_the_same_with_and_without_augment_lesson(cli, tmp_path: Path) -> None:
    """No --augment on an image means the lesson preset: the grid (values, fill) must be the one
    --augment lesson draws, and a --fill-mode must reach it."""
    Image.fromarray(digit()).save(tmp_path / "d.png")
    grids = {}
    for name, extra in (("plain", []), ("lesson", ["--augment", "lesson"]), ("constant", ["--fill-mode", "constant"])):
        code, _, err = cli("augment", "preview", tmp_path / "d.png", "--out", tmp_path / name, "--draws", "1", *extra)
        assert code == 0, err
        grids[name] = (tmp_path / name / "augmentation.png").read_bytes()
    assert grids["plain"] == grids["lesson"] and grids["constant"] != grids["lesson"]


def test_lesson_preview_writes_png(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    assert is_png(lesson_preview(rgb, tmp_path / "sub" / "grid.png"))


def test_preset_preview_writes_png(tmp_path: Path) -> None:
    out = preset_preview([digit(), digit(20)], resolve_augment("strong"), 3, tmp_path / "p.png", seed=1)
    assert is_png(out)


def test_cli_preview_image_with_preset(cli, tmp_path: Path) -> None:
    Image.fromarray(digit()).save(tmp_path / "d.png")
    code, out, err = cli(
        "augment", "preview", tmp_path / "d.png", "--out", tmp_path / "o", "--augment", "production", "--draws", "2"
    )
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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing.png"], "does not exist"),
        (["not-an-image.png"], "could not be read as an image"),
        ([".", "--augment", "leson"], "unknown --augment 'leson'; did you mean lesson?"),
        ([".", "--rotation", "400"], "--rotation must be between 0 and 180"),
        ([".", "--draws", "40"], "--draws must be between 1 and 16"),
    ],
)
def test_cli_preview_errors(cli, argv: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "not-an-image.png").write_text("hello")
    code, _, err = cli("augment", "preview", tmp_path / argv[0], "--out", tmp_path / "o", *argv[1:])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing written on a bad value
