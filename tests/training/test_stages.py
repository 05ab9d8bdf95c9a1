"""The stage plan, applying a stage to a model, and stage 2 on a tiny task."""

from __future__ import annotations

import dataclasses

import pytest
import timm
import torch
import torch.nn.functional as F

from cnnlab.config import AugmentConfig, RunConfig, TrainConfig, TransferConfig
from cnnlab.data.normalize import Normalize
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.heads import head_forward
from cnnlab.training.feature_cache import extract_features
from cnnlab.training.stage_plan import (
    Stage,
    apply_stage,
    improvement_line,
    plan_stages,
    stage_param_groups,
    use_feature_cache,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(**transfer) -> RunConfig:
    return RunConfig(train=TrainConfig(epochs=15, lr=1e-3), transfer=TransferConfig(**transfer))


def test_plan_auto_is_two_stages_when_pretrained_else_one() -> None:
    frozen, finetune = plan_stages(_config(), pretrained=True)
    assert (frozen.name, frozen.epochs, frozen.lr, frozen.prepare) == ("frozen", 50, 1e-3, "head")  # cached: cheap
    assert (finetune.name, finetune.epochs, finetune.lr, finetune.prepare) == ("finetune", 5, 1e-4, "top")
    assert finetune.scheduler == "onecycle"  # its own schedule, whatever --scheduler says
    (uncached, _) = plan_stages(_config(feature_cache=False), pretrained=True)
    assert uncached.epochs == 15  # every epoch runs the backbone: --epochs
    assert plan_stages(_config(finetune_epochs=None), pretrained=True)[1].epochs == 15
    assert finetune.bn_eval and frozen.head_only and not finetune.head_only
    (train,) = plan_stages(_config(), pretrained=False)
    assert (train.name, train.epochs, train.lr, train.prepare) == ("train", 15, 1e-3, "all")


def test_plan_modes_and_epochs() -> None:
    assert [s.name for s in plan_stages(_config(stages="frozen"), True)] == ["frozen"]
    assert [s.name for s in plan_stages(_config(stages="both"), True)] == ["frozen", "finetune"]
    assert [s.prepare for s in plan_stages(_config(stages="full"), True)] == ["all"]
    stages = plan_stages(_config(frozen_epochs=3, finetune_epochs=7, layer_decay=0.8, finetune_lr=2e-5), True)
    assert [(s.epochs, s.lr, s.layer_decay) for s in stages] == [(3, 1e-3, None), (7, 2e-5, 0.8)]
    assert [s.name for s in plan_stages(_config(finetune_epochs=0), True)] == ["frozen"]
    with pytest.raises(CnnlabError, match="--stages must be one of auto, frozen, both, full"):
        _config(stages="half")  # refused when the config is built, before any plan
    with pytest.raises(CnnlabError, match="every stage has 0 epochs"):
        plan_stages(_config(frozen_epochs=0, finetune_epochs=0), True)


def test_feature_cache_only_for_a_frozen_base_without_mixing() -> None:
    frozen, finetune = plan_stages(_config(), True)
    assert use_feature_cache(frozen, _config()) and not use_feature_cache(finetune, _config())
    assert not use_feature_cache(frozen, _config(feature_cache=False))
    mixing = dataclasses.replace(_config(), augment=dataclasses.replace(AugmentConfig(), mixup=0.2))
    assert not use_feature_cache(frozen, mixing)


def test_apply_stage_sets_trainability() -> None:
    model = timm.create_model("resnet18", num_classes=3)
    frozen, finetune = plan_stages(_config(), True)
    trainable, frozen_count = apply_stage(model, frozen, _config().transfer)
    assert trainable == 512 * 3 + 3 and trainable + frozen_count == sum(p.numel() for p in model.parameters())
    apply_stage(model, finetune, _config().transfer)  # the last 3 blocks: layer4's two and layer3's last
    assert {n.rsplit(".", 2)[0] for n, p in model.named_parameters() if p.requires_grad} == {
        "layer3.1",
        "layer4.0",
        "layer4.0.downsample",
        "layer4.1",
        "fc",
    }
    assert not model.layer4[0].bn1.training  # fine-tuning keeps BN in inference mode
    apply_stage(model, finetune, _config(finetune_layers=10).transfer)  # the lesson's 10 layers: all of layer4
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"layer4", "fc"}
    apply_stage(model, finetune, _config(finetune_blocks=1).transfer)
    assert {n.rsplit(".", 2)[0] for n, p in model.named_parameters() if p.requires_grad} == {"layer4.1", "fc"}
    apply_stage(model, Stage("train", 1, 1e-3, "all"), _config().transfer)
    assert all(p.requires_grad for p in model.parameters()) and model.layer4[0].bn1.training


def test_improvement_line() -> None:
    assert improvement_line(0.9012, 0.9137) == "improvement from fine-tuning: +1.25 points"
    assert improvement_line(0.9, 0.89) == "improvement from fine-tuning: -1.00 points"


def _bars(n: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes: a bright vertical band on the left, middle or right of a noisy image."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 3, size, size), generator=g, dtype=torch.uint8)
    for i, c in enumerate(labels.tolist()):
        images[i, :, :, c * size // 3 : (c + 1) * size // 3] = int(torch.randint(150, 256, (1,), generator=g))
    return images, labels


def test_stage2_keeps_accuracy_and_lowers_loss_on_a_tiny_task() -> None:
    torch.manual_seed(0)
    (x, y), (xt, yt) = _bars(96, 1), _bars(60, 2)
    norm = Normalize([0.5] * 3, [0.5] * 3)
    config = dataclasses.replace(_config(finetune_lr=1e-3, finetune_blocks=2), train=TrainConfig(epochs=20, lr=1e-2))
    config = dataclasses.replace(config, transfer=dataclasses.replace(config.transfer, finetune_epochs=6))
    model = create_model("test_resnet", num_classes=3, in_chans=3, image_size=(32, 32), head="linear", dropout=0.0)
    stage1, stage2 = plan_stages(config, pretrained=True)

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            logits = model(norm(xt.float() / 255))
        return float((logits.argmax(1) == yt).float().mean()), float(F.cross_entropy(logits, yt))

    apply_stage(model, stage1, config.transfer)
    features = extract_features(model, x, norm).features  # stage 1 on cached features
    optimizer = torch.optim.Adam(stage_param_groups(model, stage1))
    for _ in range(stage1.epochs):
        for i in range(0, 96, 32):
            optimizer.zero_grad()
            F.cross_entropy(head_forward(model, features[i : i + 32]), y[i : i + 32]).backward()
            optimizer.step()
    acc1, loss1 = evaluate()
    apply_stage(model, stage2, config.transfer)
    optimizer = torch.optim.Adam(stage_param_groups(model, stage2))
    for _ in range(stage2.epochs):
        apply_stage(model, stage2, config.transfer)  # model.train() + BN modes, as each epoch does
        for i in range(0, 96, 32):
            optimizer.zero_grad()
            F.cross_entropy(model(norm(x[i : i + 32].float() / 255)), y[i : i + 32]).backward()
            optimizer.step()
    acc2, loss2 = evaluate()
    assert acc2 >= acc1 and loss2 < loss1, (acc1, loss1, acc2, loss2)
