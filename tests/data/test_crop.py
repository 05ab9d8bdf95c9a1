"""Stored margin and centre crops (issue #22): aspect kept, timm's evaluation view, random training crops."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from cnnlab.augment.batch import BatchAugment
from cnnlab.config import AugmentConfig, DataConfig
from cnnlab.data.crop import center_crop, random_crop, stored_side
from cnnlab.data.decode import decode_image
from cnnlab.data.normalize import Normalize
from cnnlab.data.prepare import prepare_data
from cnnlab.data.preprocess import Preprocess


def _extent(mask: np.ndarray) -> tuple[int, int]:
    """(height, width) in px of the True region's bounding box."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_a_wide_photo_is_stored_with_its_aspect_a_circle_stays_round(tmp_path: Path) -> None:
    path = tmp_path / "circle.png"
    image = Image.new("RGB", (300, 200))
    ImageDraw.Draw(image).ellipse((90, 40, 210, 160), fill=(255, 255, 255))  # a 120-px circle, centred
    image.save(path)
    side = stored_side(64, 0.875)
    stored = decode_image(path, 3, side)
    assert side == 73 and stored.shape == (73, 73, 3)
    height, width = _extent(stored[..., 0] > 127)
    assert abs(height - width) <= 1  # round, not an ellipse
    assert abs(height - 120 * 73 / 200) <= 1.5  # the shorter side (200 px) became the stored side
    # The same measure sees the ellipse a squash to a square would make (120 px wide of 300 -> 29 px).
    squashed = np.asarray(image.resize((73, 73), Image.Resampling.BILINEAR))
    s_height, s_width = _extent(squashed[..., 0] > 127)
    assert s_height - s_width > 10


def test_centre_crop_of_the_stored_square_is_timms_evaluation_transform(tmp_path: Path) -> None:
    from timm.data import create_transform

    y, x = np.mgrid[0:200, 0:300].astype(float)  # smooth, non-square, different everywhere
    pixels = np.stack([127 + 100 * np.sin(x / 9), 127 + 100 * np.cos(y / 7), 127 + 100 * np.sin((x + y) / 11)], -1)
    path = tmp_path / "waves.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    timm_view = (
        create_transform(
            input_size=(3, 64, 64), interpolation="bilinear", crop_pct=0.875, mean=(0, 0, 0), std=(1, 1, 1)
        )(Image.open(path).convert("RGB"))
        * 255
    )

    def ours(crop_pct: float) -> torch.Tensor:
        stored = torch.from_numpy(decode_image(path, 3, stored_side(64, crop_pct))).permute(2, 0, 1)
        return Normalize.of(Preprocess(64, 3, (0.0,) * 3, (1 / 255,) * 3, crop_pct=crop_pct))(
            stored[None].float() / 255
        )[0]

    assert (ours(0.875) - timm_view).abs().mean() < 1.5  # grey levels of 255: resampling differences only
    assert (ours(1.0) - timm_view).abs().mean() > 20  # the square without margin is another view


def test_random_training_crops_vary_and_stay_inside_the_stored_square() -> None:
    torch.manual_seed(0)
    stored = torch.arange(20 * 20, dtype=torch.float32).view(1, 1, 20, 20).expand(64, 1, 20, 20)
    crops = random_crop(stored, 16)
    assert crops.shape == (64, 1, 16, 16)
    places = set()
    for crop in crops:
        top, left = divmod(int(crop[0, 0, 0]), 20)
        assert 0 <= top <= 4 and 0 <= left <= 4
        assert torch.equal(crop, stored[0, :, top : top + 16, left : left + 16])  # stored pixels, not resampled
        places.add((top, left))
    assert len(places) > 10
    assert torch.equal(center_crop(stored, 16), stored[:, :, 2:18, 2:18])
    unit = stored / 400
    shifted = BatchAugment(AugmentConfig(hflip=True), crop=16)
    resized = BatchAugment(AugmentConfig(random_resized_crop=0.5), crop=16)
    assert shifted(unit).shape == resized(unit).shape == (64, 1, 16, 16)
    assert not torch.equal(shifted(unit), shifted(unit))
    assert torch.equal(shifted.eval()(unit), unit)  # evaluation: untouched here, centre-cropped by Normalize


def test_each_storage_has_its_own_cache_entries(shapes_folder: Path, own_cache: Path, counted: list[str]) -> None:
    def prepare(crop_pct: float | None):
        return prepare_data(DataConfig(source=str(shapes_folder), image_size=16, crop_pct=crop_pct, workers=1), 0)

    square = prepare(None)
    files = len(counted)
    margin = prepare(0.8)
    assert len(counted) == 2 * files  # another storage: decoded again, not misread from the 16-px entries
    again = prepare(0.8)
    assert len(counted) == 2 * files  # and found the next time
    assert square.image_size == (16, 16) and square.crop is None and square.input_size == (16, 16)
    assert margin.image_size == (20, 20) and margin.crop == 16 and margin.input_size == (16, 16)
    assert torch.equal(again.splits["test"].images, margin.splits["test"].images)


def test_an_old_run_without_crop_pct_predicts_as_before(run_copy: Path, trained_shapes) -> None:
    from cnnlab.deploy.predict import predict_images
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles

    image = next(trained_shapes[1].glob("left/*.png"))
    now = predict_images(load_trained(RunFiles(run_copy)), [image])
    meta_path = run_copy / "run.json"
    meta = json.loads(meta_path.read_text())
    assert meta["preprocess"].pop("crop_pct") == 1.0
    meta_path.write_text(json.dumps(meta))
    old = load_trained(RunFiles(run_copy))
    assert old.normalize.crop is None and old.preprocess.stored_side == old.preprocess.side == 20
    assert predict_images(old, [image]) == now


def test_a_run_with_a_margin_predicts_on_the_centre_crop(tmp_path: Path, shapes_folder: Path, one_torch_thread) -> None:
    from cnnlab.config import build_config
    from cnnlab.deploy.predict import predict_images
    from cnnlab.serving.model import open_served
    from cnnlab.training.checkpoint import load_trained
    from cnnlab.training.run_dir import RunFiles
    from cnnlab.training.run_fit import fit

    # Training alone (no report): random crops of the 20-px stored squares, 16 px each.
    fit(
        build_config(
            augment="light",
            data=str(shapes_folder),
            image_size=16,
            crop_pct=0.8,
            epochs=1,
            batch_size=16,
            runs_dir=str(tmp_path / "runs"),
            name="m",
        ),
        "test",
    )
    trained = load_trained(RunFiles(tmp_path / "runs" / "m"))
    assert trained.preprocess.image_size == 16 and trained.preprocess.crop_pct == 0.8
    assert trained.preprocess.stored_side == 20
    image = next(shapes_folder.glob("right/*.png"))
    centre = torch.from_numpy(np.array(Image.open(image))[2:18, 2:18]).permute(2, 0, 1)[None].float() / 255
    mean, std = (torch.tensor(values).view(1, -1, 1, 1) for values in (trained.preprocess.mean, trained.preprocess.std))
    with torch.no_grad():
        expected = torch.softmax(trained.model((centre - mean) / std), 1)[0]
    top = predict_images(trained, [image], k=3)[0]["top"]
    for row in top:
        assert abs(row["probability"] - float(expected[trained.class_names.index(row["class"])])) < 1e-5
    served = open_served(tmp_path / "runs" / "m")  # the server decodes uploads as predict does
    upload = torch.from_numpy(decode_image(image, 3, served.served.stored_side)).permute(2, 0, 1)
    assert abs(float(served.infer(upload[None])[0].max()) - top[0]["probability"]) < 1e-5
    answer = served.gradcam(upload)
    assert Image.open(io.BytesIO(answer.png)).size == (16, 16)  # drawn on the centre crop the model saw
