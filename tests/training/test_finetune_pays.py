"""Stage 2 pays for itself or is not kept (issue #20): on real photo crops whose task the frozen
features do not solve, fine-tuning (on cached activations) lifts test accuracy; when it makes
validation worse, the run ends with stage 1's weights and says so."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from cnnlab.config import build_config
from cnnlab.models import create_model
from cnnlab.training.run_fit import fit
from conftest import fitted_meta

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def write_oriented_crops(root: Path, per_class: int = 40, side: int = 32, seed: int = 0) -> Path:
    """Four classes of real photos: crops of scikit-learn's temple and flower, upright or upside down.

    Colour tells the photos apart; orientation needs features the frozen backbone does not give.
    """
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images
    for split in ("train", "test"):
        for name, photo in zip(["temple", "flower"], photos):
            for flipped in (False, True):
                folder = root / split / f"{name}_{'down' if flipped else 'up'}"
                folder.mkdir(parents=True)
                for i in range(per_class):
                    span = int(rng.integers(2 * side, 4 * side))
                    top, left = rng.integers(0, photo.shape[0] - span), rng.integers(0, photo.shape[1] - span)
                    crop = Image.fromarray(photo[top : top + span, left : left + span]).resize((side, side))
                    (crop.rotate(180) if flipped else crop).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def crops_and_weights(tmp_path_factory) -> tuple[Path, Path]:
    """The photos, and starting weights for a small timm ResNet whose top does not suit them yet."""
    root = tmp_path_factory.mktemp("oriented")
    torch.manual_seed(0)
    weights = root / "start.safetensors"
    save_file(create_model("test_resnet", num_classes=4, in_chans=3, image_size=(32, 32)).state_dict(), weights)
    return write_oriented_crops(root / "photos"), weights


def _train(crops_and_weights: tuple[Path, Path], tmp_path: Path, **options) -> tuple[dict, Path]:
    photos, weights = crops_and_weights
    config = build_config(
        data=str(photos),
        model="test_resnet",
        weights=str(weights),
        frozen_epochs=20,
        runs_dir=str(tmp_path / "runs"),
        name="run",
        refit="off",
        **options,
    )  # the stages' own model
    result = fit(config, "test")
    on_disk = json.loads(result.files.meta.read_text())["stages"]
    assert on_disk == [stage.to_json() for stage in result.record.stages]  # on record as in memory
    return fitted_meta(result), result.files.best


def test_stage_two_lifts_test_accuracy_when_the_frozen_features_fall_short(crops_and_weights, tmp_path) -> None:
    meta, _ = _train(crops_and_weights, tmp_path, finetune_lr=1e-2, finetune_epochs=25)
    frozen, finetune = meta["stages"]
    assert finetune["activation_cache"]  # the top trained on the frozen layers' cached output
    assert finetune["stage_best_val_loss"] < frozen["best_val_loss"] - 0.1
    assert finetune["test_acc"] >= frozen["test_acc"] + 0.10  # 160 test photos: +16 to +24 points over 3 seeds
    kept_val = finetune["val_at_best"]  # chosen on validation accuracy (the default), not on test
    assert kept_val["errors"] < frozen["val_at_best"]["errors"] - 1
    assert meta["kept"]["stage"] == "finetune" and meta["kept"]["select"] == "accuracy"
    right = f"got {kept_val['images'] - kept_val['errors']} of {kept_val['images']} validation images right"
    assert right in meta["kept"]["why"]


def test_stage_one_weights_are_kept_when_stage_two_makes_validation_worse(crops_and_weights, tmp_path) -> None:
    meta, best = _train(crops_and_weights, tmp_path, finetune_lr=5.0, finetune_epochs=2)  # a step far too big
    frozen, finetune = meta["stages"]
    assert finetune["stage_best_val_loss"] > frozen["best_val_loss"]
    assert finetune["val_at_best"]["errors"] >= frozen["val_at_best"]["errors"] - 1  # not more than one image better
    assert meta["kept"]["stage"] == "frozen"
    assert "fine-tuning replaces it only with more than 1 more" in meta["kept"]["why"]
    assert finetune["test_acc"] == frozen["test_acc"]  # the final model is stage 1's
    assert meta["improvement"] == "improvement from fine-tuning: +0.00 points"
    checkpoint = torch.load(best, weights_only=True, map_location="cpu")
    assert checkpoint["cnnlab"]["stage"] == "frozen"  # best.ckpt was never replaced by stage 2
