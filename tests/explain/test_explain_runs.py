"""`cnnlab explain` on trained runs: Grad-CAM finds the evidence, every command works, bad input is one line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.cli.main import main
from cnnlab.explain.cam import cam_session
from cnnlab.explain.inputs import load_images, open_explained
from cnnlab.models.inference import is_channels_last
from cnnlab.training.run_dir import RunFiles
from conftest import png_size, write_photo_crops

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIDE = 32


def write_halves(root: Path, per_class: int, seed: int) -> Path:
    """``root/<vertical|horizontal>/*.png``: the class is a bar's direction, always in the left half.

    The right half holds noise and a bright square in every image, so it says nothing about
    the class: a model that learned the task takes its evidence from the left half.
    """
    rng = np.random.default_rng(seed)
    for name in ("vertical", "horizontal"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = rng.integers(0, 70, (SIDE, SIDE), dtype=np.uint8)
            top, left = rng.integers(0, SIDE - 6), rng.integers(SIDE // 2 + 1, SIDE - 6)
            image[top : top + 5, left : left + 5] = 230  # the distractor
            if name == "vertical":
                top, left = rng.integers(0, SIDE - 14), rng.integers(1, SIDE // 2 - 4)
                image[top : top + 14, left : left + 3] = 230
            else:
                top, left = rng.integers(1, SIDE - 4), rng.integers(0, SIDE // 2 - 12)
                image[top : top + 3, left : left + 12] = 230
            Image.fromarray(image).save(root / name / f"{i:03d}.png")
    return root


def train(*args: object) -> None:
    assert main([str(a) for a in args]) == 0


@pytest.fixture(scope="module")
def halves_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lesson's simple_cnn trained on the halves (its test accuracy is checked where it matters)."""
    root = tmp_path_factory.mktemp("halves")
    data = write_halves(root / "data", per_class=60, seed=0)
    train(
        "train",
        data,
        "--model",
        "simple_cnn",
        "--epochs",
        "8",
        "--batch-size",
        "16",
        "--lr",
        "0.003",
        "--runs-dir",
        root / "runs",
        "--name",
        "halves",
    )
    return root / "runs" / "halves"


@pytest.fixture(scope="module")
def frozen_lite0_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """EfficientNet-Lite0 with ImageNet weights, stage 1 only (frozen backbone), channels_last (the default)."""
    root = tmp_path_factory.mktemp("lite0")
    photos = write_photo_crops(root / "photos", per_class=12, side=64)
    train(
        "train",
        photos,
        "--model",
        "efficientnet_lite0",
        "--pretrained",
        "--stages",
        "frozen",
        "--frozen-epochs",
        "3",
        "--image-size",
        "64",
        "--runs-dir",
        root / "runs",
        "--name",
        "lite0",
    )
    return root / "runs" / "lite0", photos


def test_gradcam_heat_concentrates_on_the_informative_half(halves_run: Path, tmp_path: Path) -> None:
    fresh = write_halves(tmp_path / "fresh", per_class=10, seed=1)  # images the model never saw
    run = open_explained(halves_run)
    images = load_images(run, [fresh])
    assert images.true.count(0) == images.true.count(1) == 10  # the true class, from the folder name
    with cam_session(run.trained.model, "features", run.trained.normalize) as explain:
        maps = explain(images.images, None)
    predicted = maps.probs.argmax(1).numpy()
    assert (predicted == np.array(images.true)).mean() >= 0.9  # it learned the task...
    # The hot part of each map (heat >= 0.5 of its peak): what a reader sees as "where it looked".
    hot = [np.where(heat >= 0.5, heat, 0.0) for heat in maps.heat]
    fractions = [float(h[:, : SIDE // 2].sum() / h.sum()) for h in hot]
    assert np.mean(fractions) > 0.7, fractions  # ...and Grad-CAM shows it looking left (0.5 = anywhere)


def test_run_report_shows_filters_and_gradcam_and_report_redraws_them(cli, halves_run: Path) -> None:
    files = RunFiles(halves_run)
    page = files.report.read_text()
    assert '<section id="explain"><h2>Explain</h2>' in page and "Grad-CAM on test images" in page
    for key in ("explain_filters", "explain_gradcam"):
        png_size(files.figure(key))
        files.figure(key).unlink()
    code, _, err = cli("report", halves_run)
    assert code == 0, err
    assert files.figure("explain_filters").is_file() and files.figure("explain_gradcam").is_file()
    assert page.count("data:image/png") == files.report.read_text().count("data:image/png")


def test_filters_feature_maps_gradcam_and_receptive_field_commands(cli, halves_run: Path, tmp_path: Path) -> None:
    code, out, err = cli("explain", "filters", halves_run)
    assert code == 0, err
    assert "features.0: 32 filters of 3x3 over 1 input channel(s)" in out
    png_size(halves_run / "explain" / "filters.png")
    image = halves_run.parent.parent / "data" / "vertical" / "000.png"
    code, out, err = cli("explain", "feature-maps", halves_run, image, "--out", tmp_path)
    assert code == 0, err
    assert "layers: features.1 (32x30x30), features.2 (32x15x15), features.4 (64x13x13), features (64x6x6)" in out
    png_size(tmp_path / "feature_maps_000.png")
    code, out, err = cli("explain", "gradcam", halves_run, image, "--method", "gradcam++", "--format", "csv")
    assert code == 0, err
    (row,) = list(csv.DictReader(out.splitlines()))
    assert row["true"] == "vertical" and row["predicted"] in ("vertical", "horizontal")
    png_size(Path(row["figure"]))
    code, out, err = cli("explain", "receptive-field", halves_run, "--format", "csv")
    assert code == 0, err
    fields = [(r["layer"], r["output"], r["jump"], r["receptive_field"]) for r in csv.DictReader(out.splitlines())]
    # The lesson's network on 32 px: conv 3x3 -> 30, pool 2 -> 15, conv 3x3 -> 13, pool 2 -> 6.
    assert fields == [
        ("features.0", "30x30", "1", "3"),
        ("features.2", "15x15", "2", "4"),
        ("features.3", "13x13", "2", "8"),
        ("features.5", "6x6", "4", "10"),
    ]
    assert (halves_run / "explain" / "receptive_field.csv").is_file()


def test_gradcam_on_a_frozen_backbone_run_in_channels_last(cli, frozen_lite0_run: tuple[Path, Path]) -> None:
    run, photos = frozen_lite0_run
    files = RunFiles(run)
    png_size(files.figure("explain_gradcam"))  # drawn at the end of training, backbone still frozen
    assert is_channels_last(open_explained(run).trained.model)
    gray = photos.parent / "gray.png"
    Image.open(photos / "flower" / "000.jpg").convert("L").save(gray)  # 1 channel for an RGB model
    code, out, err = cli("explain", "gradcam", run, photos / "flower" / "001.jpg", gray, "--format", "json")
    assert code == 0, err
    assert '"true": "flower"' in out and '"true": ""' in out  # known from its folder; unknown for gray.png
    for name in ("gradcam_001.png", "gradcam_gray.png"):
        png_size(run / "explain" / name)


def test_cam_session_restores_frozen_flags_and_modes_and_writes_no_gradients() -> None:
    from cnnlab.data.normalize import Normalize
    from cnnlab.models import create_model

    model = create_model("fast_cnn", num_classes=3, in_chans=1, image_size=(16, 16))
    model.train()
    for p in model.features.parameters():
        p.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with cam_session(model, "features", Normalize([0.0], [1.0]), "gradcam") as explain:
        maps = explain(torch.randint(0, 255, (3, 1, 16, 16), dtype=torch.uint8), [2, 2, 2])
    assert maps.heat.shape == (3, 16, 16) and maps.target == [2, 2, 2] and np.isfinite(maps.heat).all()
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "args, message",
    [
        (["gradcam", "{run}", "nowhere.png"], "input 'nowhere.png' not found"),
        (["gradcam", "{run}", "{text}"], "notes.png could not be read as an image"),
        (
            ["gradcam", "{run}", "{image}", "--class", "vertikal"],
            "'vertikal' is not a class of this run; did you mean vertical?",
        ),
        (
            ["gradcam", "{run}", "{image}", "--layer", "feature"],
            "no layer 'feature' in this SimpleCNN; did you mean features?",
        ),
        (["feature-maps", "{run}", "{image}", "--layer", "features.0"], "changed in place by a later operation"),
        (["filters", "{bare}"], "has no checkpoint yet"),
    ],
)
def test_bad_input_is_one_line_exit_2(cli, halves_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "notes.png").write_text("not an image")
    bare = tmp_path / "bare"
    shutil.copytree(halves_run, bare, ignore=shutil.ignore_patterns("checkpoints"))
    image = halves_run.parent.parent / "data" / "horizontal" / "001.png"
    values = {"run": halves_run, "text": tmp_path / "notes.png", "image": image, "bare": bare}
    code, _, err = cli("explain", *[a.format(**values) for a in args])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_colour_image_on_a_grayscale_run_is_reduced_as_in_training(cli, halves_run: Path, tmp_path: Path) -> None:
    colour = np.zeros((48, 48, 3), dtype=np.uint8)
    colour[:, 4:8] = (255, 40, 40)  # a red vertical bar on the left
    Image.fromarray(colour).save(tmp_path / "red.jpg")
    code, _, err = cli("explain", "gradcam", halves_run, tmp_path / "red.jpg", "--out", tmp_path, "--format", "csv")
    assert code == 0, err
    png_size(tmp_path / "gradcam_red.png")


def _sign_model() -> torch.nn.Module:
    """Non-negative features (a ReLU'd convolution), then a head that adds them up for class 0 and
    subtracts them for class 1: every photo holds evidence for class 0 and none for class 1."""
    from torch import nn

    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))
    model.add_module("head", nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        model.features[0].weight.copy_(torch.rand_like(model.features[0].weight))
        model.features[0].bias.zero_()
        model.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
    return model.eval()


def test_a_map_for_a_class_without_evidence_is_flagged_not_drawn_as_evidence() -> None:
    from cnnlab.data.normalize import Normalize

    images = torch.randint(1, 255, (2, 1, 12, 12), dtype=torch.uint8)
    with cam_session(_sign_model(), "features", Normalize([0.0], [1.0])) as explain:
        maps = explain(images, [0, 1])
    assert maps.peak[0] > 0 and not maps.no_evidence(0)  # class 0: the summed features raise it
    assert maps.peak[1] <= 0 and maps.no_evidence(1)  # class 1: nothing raises it...
    assert maps.heat[1].max() == 0  # ...and the package's map is flat (all blue), hence the flag
    with cam_session(_sign_model(), "features", Normalize([0.0], [1.0]), "eigencam") as explain:
        assert not explain(images, None).no_evidence(0)  # no class: nothing to lack evidence for


def test_gradcam_figures_have_a_colour_bar_saying_what_the_colours_mean() -> None:
    from cnnlab.explain.model_figures import CamPanel, gradcam_figure

    image = np.zeros((3, 16, 16), dtype=np.uint8)
    heat = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    panels = [
        CamPanel(image, heat, "a.png", "ants", 0.9, "ants"),
        CamPanel(image, np.zeros_like(heat), "b.png", "bees", 0.6, "ants", None, 0.4, evidence=False),
    ]
    figure = gradcam_figure(panels)
    picture, bar = figure.axes  # the pictures, then the colour bar
    assert bar.get_xlabel().startswith("evidence for the class the map explains")
    assert [t.get_text() for t in bar.get_xticklabels()] == ["low", "high"]
    assert bar.images or bar.collections  # the colour ramp itself is drawn
    said = [t.get_text() for t in picture.texts]
    assert "no evidence for: ants (40%)" in said[-2] and said[-1] == "no evidence"  # on the flat map itself


def test_gradcam_on_a_class_without_evidence_says_so(
    cli, halves_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytorch_grad_cam import GradCAM

    raw = GradCAM.get_cam_image
    # A photo with no positive evidence for the class: every raw map value below zero.
    monkeypatch.setattr(GradCAM, "get_cam_image", lambda self, *a, **k: -np.abs(raw(self, *a, **k)) - 1e-3)
    image = halves_run.parent.parent / "data" / "vertical" / "000.png"
    code, out, err = cli("explain", "gradcam", halves_run, image, "--class", "horizontal", "--out", tmp_path)
    assert code == 0, err
    assert "000.png: no evidence for 'horizontal' in this photo" in err  # on the console
    assert "evidence" in out and "False" in out  # and a column in the table
    code, out, err = cli(
        "explain", "gradcam", halves_run, image, "--class", "horizontal", "--format", "json", "--out", tmp_path
    )
    assert code == 0 and '"evidence": false' in out
    png_size(tmp_path / "gradcam_000.png")
