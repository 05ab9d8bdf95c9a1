"""Stage 2 on cached activations: the cut reproduces the model, gives the same losses and gradients
as training on images, is caught during stage 1's extraction, and is refused where it would not be exact."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from cnnlab.config import RunConfig, TrainConfig, TransferConfig
from cnnlab.config.augment import AugmentConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.models import create_model
from cnnlab.models.cut import cut_below_trainable
from cnnlab.training.activation_cache import plan_cut
from cnnlab.training.feature_cache import cache_features
from cnnlab.training.optim import apply_speedups
from cnnlab.training.stage_plan import apply_stage, plan_stages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NORM = Normalize([0.5] * 3, [0.5] * 3)


def _data(n: int = 12) -> PreparedData:
    g = torch.Generator().manual_seed(0)

    def split(count: int) -> ImageSet:
        return ImageSet(
            torch.randint(0, 256, (count, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.arange(count) % 2,
            [f"x:{i}" for i in range(count)],
        )

    return PreparedData({"train": split(n), "val": split(6), "test": split(6)}, ["a", "b"], "noise")


def _config(**transfer) -> RunConfig:
    return RunConfig(transfer=TransferConfig(**transfer), train=TrainConfig(epochs=1))


def _model(name: str, head: str = "default", dropout: float = 0.5) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=2, in_chans=3, image_size=(32, 32), head=head, dropout=dropout)
    return apply_speedups(model, TrainConfig())  # channels_last, as cnnlab trains


@pytest.mark.parametrize(
    "name, head, transfer",
    [
        ("test_efficientnet", "default", {"finetune_layers": 4}),
        ("test_efficientnet", "lesson", {"finetune_blocks": 2}),
        ("test_resnet", "default", {"finetune_blocks": 1}),
    ],
)
def test_cached_top_gives_the_losses_and_gradients_of_the_whole_model(name: str, head: str, transfer: dict) -> None:
    data, config = _data(), _config(**transfer)
    model = _model(name, head)
    stages = plan_stages(config, pretrained=True)
    cache, why = plan_cut(model, stages, config, data, NORM)
    assert cache is not None, why
    apply_stage(model, stages[1], config.transfer)
    images = NORM(Normalize.to_unit(data.splits["train"].images))
    labels = data.splits["train"].labels
    with torch.no_grad():
        cached = cache.cut.bottom_forward(images)

    def loss_and_grads(forward, x):
        model.zero_grad()
        torch.manual_seed(3)  # the same dropout mask: the bottom draws no random numbers
        loss = F.cross_entropy(forward(x), labels)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    whole_loss, whole_grads = loss_and_grads(model, images)
    top_loss, top_grads = loss_and_grads(cache.cut.top_forward, cached)
    assert torch.allclose(whole_loss, top_loss, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(whole_grads, top_grads))
    assert not any(p.requires_grad for p in cache.cut.bottom.parameters())


def test_planning_the_cut_leaves_the_weights_and_batchnorm_statistics_alone() -> None:
    data, config = _data(), _config(finetune_blocks=2)
    model = _model("test_efficientnet")
    model.train()  # as a run holds it before its first stage
    before = {name: value.clone() for name, value in model.state_dict().items()}
    cache, why = plan_cut(model, plan_stages(config, pretrained=True), config, data, NORM)
    assert cache is not None, why
    changed = [name for name, value in model.state_dict().items() if not torch.equal(value, before[name])]
    assert changed == []  # before: every BatchNorm's running statistics had moved towards one image's


def test_activations_are_caught_during_stage_one_extraction() -> None:
    data, config = _data(), _config(finetune_blocks=2)
    model = _model("test_efficientnet")
    stages = plan_stages(config, pretrained=True)
    cache, _ = plan_cut(model, stages, config, data, NORM)
    apply_stage(model, stages[0], config.transfer)
    with cache.catching(data):
        cache_features(model, data, NORM)
    assert [len(cache.activations[s]) for s in ("train", "val", "test")] == [12, 6, 6]
    with torch.no_grad():
        expected = cache.cut.bottom_forward(NORM(Normalize.to_unit(data.splits["val"].images)))
    assert torch.allclose(cache.activations["val"], expected, atol=1e-5)
    assert not cache.activations["val"].is_inference()  # trainable inputs, not inference tensors


def test_no_cut_where_the_bottom_would_change_between_epochs() -> None:
    data = _data()
    augmented = RunConfig(augment=AugmentConfig(hflip=True), transfer=TransferConfig(finetune_blocks=1))
    stages = plan_stages(augmented, pretrained=True)
    assert plan_cut(_model("test_efficientnet"), stages, augmented, data, NORM) == (
        None,
        "augmentation changes the images every epoch",
    )
    # Stochastic depth in the frozen blocks: the bottom is random while training, so it cannot be cached.
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=2, drop_path_rate=0.3)
    config = _config(finetune_blocks=1)
    cache, why = plan_cut(model, plan_stages(config, pretrained=True), config, data, NORM)
    assert cache is None and "not deterministic" in why
    # Nothing frozen below the trainable part: no cut.
    everything = _config(finetune_layers=1000)
    assert plan_cut(_model("test_resnet"), plan_stages(everything, pretrained=True), everything, data, NORM)[0] is None


def test_a_forward_pass_that_is_not_a_chain_is_not_cut() -> None:
    model = timm.create_model("test_resnet", num_classes=2)
    original = model.forward_features
    model.forward_features = lambda x: original(x) * 2.0  # extra work the module chain does not hold
    for p in model.parameters():
        p.requires_grad_(False)
    for p in model.layer4.parameters():
        p.requires_grad_(True)
    cut, why = cut_below_trainable(model.eval(), torch.randn(2, 3, 32, 32))
    assert cut is None and "does not reproduce" in why
