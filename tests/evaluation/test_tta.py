"""Test-time augmentation: the views, the averaged prediction, and evaluate/predict --tta."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import read_json

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Recorder(nn.Module):
    """A linear classifier on mean pixels of the left and right halves; records each input's shape."""

    def __init__(self, symmetric: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.symmetric, self.shapes = symmetric, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        half = x.shape[-1] // 2
        left, right = x[..., :half].mean((1, 2, 3)), x[..., half:].mean((1, 2, 3))
        if self.symmetric:  # mirror-invariant: the same answer for an image and its mirror image
            left, right = (left + right) / 2, (left + right) / 2
        return self.linear(torch.stack([left, right], 1))


def _images(n: int = 6, side: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(0)).to(torch.uint8)


def test_mirror_views_average_to_the_plain_answer_only_for_a_mirror_invariant_model():
    from cnnlab.data.normalize import Normalize
    from cnnlab.models.inference import predict_probs
    from cnnlab.models.tta import tta_probs

    torch.manual_seed(0)
    images, scale = _images(), Normalize([0.5] * 3, [0.25] * 3)
    for symmetric, same in ((True, True), (False, False)):
        model = _Recorder(symmetric)
        model.linear.weight.data = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
        plain = torch.cat([p for _, p in predict_probs(model, images, scale)])
        model.shapes.clear()
        averaged = torch.cat([p for _, p in tta_probs(model, images, scale)])
        assert torch.allclose(averaged.sum(1), torch.ones(len(images)))
        assert torch.allclose(plain, averaged, atol=1e-6) is same
        assert model.shapes == [(6, 3, 8, 8)] * 2  # image and mirror image, whole


def test_a_stored_margin_gives_ten_crops_of_the_model_input():
    from cnnlab.data.normalize import Normalize
    from cnnlab.models.tta import describe, tta_probs, view_count

    model = _Recorder()
    list(tta_probs(model, _images(side=10), Normalize([0.5] * 3, [0.25] * 3, crop=8)))
    assert model.shapes == [(6, 3, 8, 8)] * 10
    assert view_count(10, 8) == 10 and view_count(8, None) == 2
    assert "10 views" in describe(10, 8)


@pytest.fixture(scope="module")
def colors_run(tmp_path_factory):
    """simple_cnn on red vs blue rectangles (mirror-symmetric classes), stored at 32 px, seen at 24."""
    from cnnlab.cli.main import main

    root = tmp_path_factory.mktemp("tta")
    assert (
        main(
            [
                "train",
                "synthetic-colors",
                "--epochs",
                "3",
                "--batch-size",
                "32",
                "--image-size",
                "24",
                "--crop-pct",
                "0.75",
                "--runs-dir",
                str(root),
                "--name",
                "colors",
            ]
        )
        == 0
    )
    return root / "colors"


def test_evaluate_tta_records_both_scores_and_their_cost(cli, colors_run):
    code, out, err = cli("evaluate", colors_run, "--tta")
    assert code == 0, err
    assert "TTA:" in out and "time per image" in out
    metrics = read_json(colors_run / "metrics.json")
    plain, tta = metrics["test"], metrics["test_tta"]
    assert tta["num_samples"] == plain["num_samples"]
    assert tta["accuracy"] >= plain["accuracy"]  # flipping or shifting a rectangle keeps its colour
    assert set(tta["per_class"]) == {"blue", "red"}
    assert metrics["tta"]["views"] == 10 and metrics["tta"]["ms_per_image"]["tta"] > 0
    report = (colors_run / "report.html").read_text()
    assert "test, with TTA" in report and "ms per image" in report


def test_predict_tta_and_the_python_api(cli, colors_run, tmp_path):
    import numpy as np

    import cnnlab

    image = np.zeros((32, 32, 3), np.uint8)
    image[4:20, 2:14] = (230, 20, 20)  # a red rectangle off-centre
    plain = cnnlab.predict(colors_run, image, top_k=2, runtime="pytorch")[0]["top"]
    tta = cnnlab.predict(colors_run, image, top_k=2, runtime="pytorch", tta=True)[0]["top"]
    assert plain[0]["class"] == tta[0]["class"] == "red"
    assert plain[0]["probability"] != pytest.approx(tta[0]["probability"], abs=1e-7)
    metrics = cnnlab.evaluate(colors_run, tta=True)
    assert metrics["tta"]["accuracy"] >= metrics["accuracy"] and metrics["tta"]["views"] == 10
