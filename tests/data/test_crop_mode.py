"""--crop-mode (issue #29): the whole photo squashed or padded into the stored square, as timm's eval does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.config import DataConfig
from cnnlab.data.crop import stored_side
from cnnlab.data.decode import Fit, decode_image
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import prepare_data
from cnnlab.data.preprocess import Preprocess
from conftest import read_json, train_squash_bars

RED = (255, 0, 0)
GREY = (90, 90, 90)


def _striped(path: Path) -> Path:
    """A 300x100 grey photo with a red stripe along its left end (its first 20 px)."""
    pixels = np.full((100, 300, 3), GREY, dtype=np.uint8)
    pixels[:, :20] = RED
    Image.fromarray(pixels).save(path)
    return path


def _red(stored: np.ndarray) -> np.ndarray:
    return (stored[..., 0] > 200) & (stored[..., 1] < 60)


def test_center_cuts_the_left_end_squash_and_border_keep_it(tmp_path: Path) -> None:
    path = _striped(tmp_path / "wide.png")
    center = decode_image(path, 3, 60)
    squash = decode_image(path, 3, 60, fit=Fit("squash"))
    border = decode_image(path, 3, 60, fit=Fit.of("border", (0.5, 0.25, 0.0)))
    assert center.shape == squash.shape == border.shape == (60, 60, 3)
    assert not _red(center).any()  # the long side's ends are cut: the stripe is gone
    assert _red(squash)[:, :3].all() and not _red(squash)[:, 6:].any()  # 20 of 300 px -> 4 of 60, every row
    # border: the photo 60x20 in the middle rows, the stripe at its left; above and below the fill (the mean)
    assert _red(border)[20:40, :3].all() and not _red(border)[:20].any()
    assert (border[:19] == (128, 64, 0)).all() and (border[41:] == (128, 64, 0)).all()
    gray = decode_image(path, 1, 60, fit=Fit.of("border", (0.5, 0.25, 0.0)))
    assert gray.shape == (60, 60, 1) and (gray[:19] == 64).all()  # a gray model pads with the mean's average


@pytest.mark.parametrize("mode", ["squash", "border"])
def test_each_mode_then_the_centre_crop_is_timms_evaluation_transform(tmp_path: Path, mode: str) -> None:
    from timm.data import create_transform

    # smooth, non-square, different everywhere; 197 rows fit as 48 of 73 px, whose padding splits evenly both
    # ways (padding the stored 73 px and then centre-cropping 64 may place the photo one row off timm's
    # single pad to 64 when the split is uneven)
    y, x = np.mgrid[0:197, 0:300].astype(float)
    pixels = np.stack([127 + 100 * np.sin(x / 9), 127 + 100 * np.cos(y / 7), 127 + 100 * np.sin((x + y) / 11)], -1)
    path = tmp_path / "waves.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    mean = (0.5, 0.4, 0.3)
    timm_view = create_transform(
        input_size=(3, 64, 64), interpolation="bilinear", crop_pct=0.875, crop_mode=mode, mean=mean, std=(1, 1, 1)
    )(Image.open(path).convert("RGB"))
    pre = Preprocess(64, 3, mean, (1.0,) * 3, crop_pct=0.875, crop_mode=mode)
    stored = torch.from_numpy(decode_image(path, 3, pre.stored_side, fit=pre.fit)).permute(2, 0, 1)
    ours = Normalize.of(pre)(stored[None].float() / 255)[0]
    assert (ours - timm_view).abs().mean() < 1.5 / 255  # resampling differences only
    centre = torch.from_numpy(decode_image(path, 3, pre.stored_side)).permute(2, 0, 1)
    assert (Normalize.of(pre)(centre[None].float() / 255)[0] - timm_view).abs().mean() > 10 / 255  # another view


def test_a_squashed_image_is_never_served_from_a_centre_cropped_cache_entry(
    tmp_path: Path, own_cache: Path, counted: list[str]
) -> None:
    folder = tmp_path / "photos"
    for name in ("a", "b"):
        (folder / name).mkdir(parents=True)
        for i in range(6):
            _striped(folder / name / f"{i}.png")

    def prepare(mode: str):
        config = DataConfig(source=str(folder), image_size=16, crop_mode=mode, workers=1, image_store="memory")
        return prepare_data(config, 0)

    center = prepare("center")
    files = len(counted)
    squash = prepare("squash")
    assert len(counted) == 2 * files  # decoded again, not read from the centre-cropped entries
    again = prepare("squash")
    assert len(counted) == 2 * files  # and found in the cache the next time
    assert torch.equal(again.splits["train"].images, squash.splits["train"].images)
    assert not _red(center.splits["train"].images.permute(0, 2, 3, 1).numpy()).any()
    assert _red(squash.splits["train"].images.permute(0, 2, 3, 1).numpy()).any()
    assert squash.crop_mode == "squash" and center.crop_mode == "center"
    stored = prepare_data(DataConfig(source=str(folder), image_size=16, crop_mode="squash", image_store="disk"), 0)
    assert torch.equal(stored.splits["train"].images, squash.splits["train"].images)  # the record store too


def test_a_squash_run_records_its_mode_and_predict_squashes_too(tmp_path: Path, cli, one_torch_thread) -> None:
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    run, folder = train_squash_bars(cli, tmp_path)
    runs = run.parent
    pre = read_json(runs / "sq" / "run.json")["preprocess"]
    assert pre["crop_mode"] == "squash" and pre["resize"] == "whole image resized to size (aspect not kept)"
    # the bars at the photos' ends were seen: left and right told apart (a centre crop cannot: 4 of 7 on this set)
    assert read_json(runs / "sq" / "metrics.json")["test"]["accuracy"] > 0.85

    image = next(folder.glob("left/*.png"))
    trained = load_trained(RunFiles(runs / "sq"))

    def probabilities(fit: Fit) -> torch.Tensor:  # the run's own evaluation: stored square, centre crop, model
        stored = torch.from_numpy(decode_image(image, 3, stored_side(20, 0.8), fit=fit)).permute(2, 0, 1)
        with torch.no_grad():
            return torch.softmax(trained.model(trained.normalize(stored[None].float() / 255)), 1)[0]

    expected, centre = probabilities(Fit("squash")), probabilities(Fit("center"))
    assert (expected - centre).abs().max() > 1e-3  # the two views differ, so the check below can fail
    code, out, err = cli("predict", runs / "sq", image, "--format", "json", "--top-k", "2")
    assert code == 0, err
    import json

    for row in json.loads(out)[0]["top"]:
        assert abs(row["probability"] - float(expected[trained.class_names.index(row["class"])])) < 1e-5
