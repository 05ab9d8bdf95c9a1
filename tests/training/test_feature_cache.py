"""Feature cache: features equal the model's own, views rotate, and training the head on cached
features gives the same result as training on images through the frozen backbone."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch

from cnnlab.config import TrainConfig
from cnnlab.data.loaders import ImageDataModule
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.models import create_model
from cnnlab.models.freeze import freeze_backbone, set_frozen_bn_eval
from cnnlab.models.heads import classifier_of, head_forward, pooled_features
from cnnlab.training.feature_cache import (
    FeatureDataModule,
    FeatureHeadModule,
    cache_features,
    extract_features,
    feature_loader,
)
from cnnlab.training.module import ClassifierModule
from cnnlab.training.stage_plan import FrozenBatchNormEval

pytestmark = pytest.mark.usefixtures("one_torch_thread")


NORM = Normalize([0.5] * 3, [0.5] * 3)


def _split(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, :, :, c * 10 : c * 10 + 10] = int(torch.randint(150, 256, (1,), generator=g))
    return ImageSet(images, labels, [f"bars:{seed}:{i}" for i in range(n)])


@pytest.fixture(scope="module")
def data() -> PreparedData:
    splits = {"train": _split(70, 1), "val": _split(30, 2), "test": _split(30, 3)}
    return PreparedData(splits, ["left", "middle", "right"], "bars")


def _model(head: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("test_resnet", num_classes=3, in_chans=3, image_size=(32, 32), head=head, dropout=0.0)
    freeze_backbone(model)
    return model


def test_features_match_the_model_and_train_mode_is_restored(data: PreparedData) -> None:
    model = _model("lesson").train()
    set_frozen_bn_eval(model)
    modes = [m.training for m in model.modules()]
    features = extract_features(model, data.splits["val"], NORM, batch_size=8)
    assert features.features.shape == (30, 96) and len(features) == 30
    assert [m.training for m in model.modules()] == modes  # frozen BN still in eval, the rest training
    model.eval()
    with torch.no_grad():
        x = NORM(data.splits["val"].images.float() / 255)
        assert torch.allclose(features.features, pooled_features(model, x), atol=1e-5)
        assert torch.allclose(head_forward(model, features.features), model(x), atol=1e-5)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)  # input follows the model's layout
    assert torch.allclose(extract_features(nhwc, data.splits["val"], NORM).features, features.features, atol=1e-4)
    model.train()  # cached features are normal tensors: usable for a backward pass
    head_forward(model, features.features).sum().backward()
    assert classifier_of(model)[0].weight.grad is not None


def test_augmented_views_rotate_by_epoch(data: PreparedData) -> None:
    calls = []

    def augment(unit: torch.Tensor) -> torch.Tensor:
        calls.append(len(unit))
        return unit.flip(-1)

    cached = cache_features(_model("linear"), data, NORM, batch_size=64, augment=augment, train_views=2)
    train = cached["train"]
    assert train.views == 2 and train.features.shape == (140, 96) and len(train) == 70
    assert cached["val"].views == 1 and sum(calls) == 140  # validation and test never augmented
    loader = feature_loader(train, 70, shuffle=False)
    for epoch, offset in [(0, 0), (1, 70), (2, 0)]:
        loader.sampler.set_epoch(epoch)
        ((features, _),) = list(loader)
        assert torch.equal(features, train.features[offset : offset + 70])


@pytest.mark.parametrize("head", ["lesson", "default"])
def test_head_training_on_cache_equals_training_on_images(data: PreparedData, head: str) -> None:
    cfg = TrainConfig(epochs=2, lr=1e-2, seed=0)
    images_model = _model(head)
    cache_model = copy.deepcopy(images_model)

    def fit(module: L.LightningModule, datamodule: L.LightningDataModule) -> float:
        L.seed_everything(0, verbose=False)
        trainer = L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[FrozenBatchNormEval()],
        )
        trainer.fit(module, datamodule=datamodule)
        return float(trainer.callback_metrics["val_loss"])

    no_cache = fit(ClassifierModule(images_model, 3, NORM, cfg), ImageDataModule(data, 16, seed=0))
    cached = cache_features(cache_model, data, NORM)
    with_cache = fit(FeatureHeadModule(cache_model, 3, cfg), FeatureDataModule(cached, 16, seed=0))
    assert with_cache == pytest.approx(no_cache, rel=1e-4)
    for a, b in zip(images_model.state_dict().values(), cache_model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5)  # heads trained alike; backbones untouched alike
    assert not torch.equal(
        classifier_of(cache_model).state_dict()["weight" if head == "default" else "0.weight"],
        classifier_of(_model(head)).state_dict()["weight" if head == "default" else "0.weight"],
    )
