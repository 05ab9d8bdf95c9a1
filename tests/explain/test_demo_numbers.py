"""`cnnlab explain conv` and `explain pool`: the lesson's exact numbers, and the same on a user's image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.errors import CnnlabError
from cnnlab.explain import demo_numbers as lesson
from conftest import png_size


def valid_correlation(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """By hand: each output cell is the sum of the window times the kernel (no padding, stride 1)."""
    k = kernel.shape[0]
    rows, cols = image.shape[0] - k + 1, image.shape[1] - k + 1
    return np.array([[np.sum(image[i : i + k, j : j + k] * kernel) for j in range(cols)] for i in range(rows)])


def test_conv_feature_maps_are_the_hand_computed_valid_convolution_of_the_6x6_edge() -> None:
    results = lesson.convolve(lesson.EDGE_IMAGE, list(lesson.FILTERS))
    image = lesson.EDGE_IMAGE.numpy()
    for result in results:
        assert result.feature_map.shape == (4, 4)
        np.testing.assert_allclose(
            result.feature_map.numpy(), valid_correlation(image, result.kernel.numpy()), rtol=1e-6, atol=1e-5
        )
    by_name = {r.name: r.feature_map.tolist() for r in results}
    assert by_name["vertical"] == [[0, 30, 30, 0]] * 4  # the lesson's strong response at the edge
    assert by_name["horizontal"] == [[0, 0, 0, 0]] * 4  # no horizontal edge: no response
    assert by_name["sobel-v"] == [[0, 40, 40, 0]] * 4


def test_pooling_gives_the_lessons_values() -> None:
    biggest, mean = lesson.pool(lesson.FEATURE_MAP, 2)
    assert biggest.tolist() == [[6, 4], [4, 8]]
    assert mean.tolist() == [[3.75, 2.5], [2.5, 5.5]]
    levels = lesson.pool_levels(torch.arange(64.0).reshape(1, 8, 8), 2, 3)
    assert [tuple(x.shape[1:]) for x in levels["max"]] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    assert levels["max"][-1].item() == 63 and levels["average"][-1].item() == 31.5


def test_conv_and_pool_commands_draw_and_explain_the_lesson(cli, tmp_path: Path) -> None:
    code, out, err = cli("explain", "conv", "--out", tmp_path)
    assert code == 0, err
    assert "[0 30 30 0]" in out and "no horizontal edge" in out
    png_size(tmp_path / "conv.png")
    code, out, err = cli("explain", "pool", "--out", tmp_path)
    assert code == 0, err
    assert "[[6, 4], [4, 8]]" in out and "[[3.75, 2.5], [2.5, 5.5]]" in out and "4x4 -> 2x2" in out
    png_size(tmp_path / "pool.png")


def test_conv_and_pool_on_the_users_image(cli, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    photo[:, 60:] = 250  # a strong vertical edge in the middle
    Image.fromarray(photo).save(tmp_path / "photo.jpg")
    code, out, err = cli(
        "explain", "conv", "--image", tmp_path / "photo.jpg", "--filters", "sobel-v,blur", "--out", tmp_path
    )
    assert code == 0, err
    assert "grayscale (90x90)" in out and "feature maps 88x88" in out
    png_size(tmp_path / "conv_photo.png")
    code, out, err = cli("explain", "pool", "--image", tmp_path / "photo.jpg", "--out", tmp_path)
    assert code == 0, err
    assert "90x90 -> 45x45 -> 22x22 -> 11x11" in out
    png_size(tmp_path / "pool_photo.png")


@pytest.mark.parametrize(
    "args, message",
    [
        (["conv", "--filters", "sobel"], "unknown filter 'sobel'; did you mean sobel-v?"),
        (["conv", "--image", "missing.png"], "--image missing.png not found"),
        (["pool", "--size", "5"], "larger than the lesson's 4x4 map"),
    ],
)
def test_bad_demo_input_is_one_line_exit_2(cli, tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = cli("explain", *args, "--out", tmp_path)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_file_that_is_not_an_image_is_named(cli, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not a picture")
    code, _, err = cli("explain", "pool", "--image", tmp_path / "notes.jpg", "--out", tmp_path)
    assert code == 2 and "notes.jpg could not be read as an image" in err
    with pytest.raises(CnnlabError, match="too small for 3 poolings"):
        lesson.pool_levels(torch.zeros(1, 7, 7), 2, 3)
