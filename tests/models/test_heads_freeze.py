"""Custom heads, freezing/unfreezing, frozen BatchNorm and optimizer groups."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models import create_model
from cnnlab.models.freeze import (
    backbone_blocks,
    freeze_backbone,
    param_groups,
    set_frozen_bn_eval,
    unfreeze_last_blocks,
    unfreeze_last_layers,
)
from cnnlab.models.heads import HeadedModel, head_forward, pooled_features
from cnnlab.models.outputs import as_class_logits
from cnnlab.models.summary import count_parameters

pytestmark = pytest.mark.usefixtures("one_torch_thread")


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _make(name: str = "resnet18", head: str = "default", **kw) -> nn.Module:
    kw.setdefault("num_classes", 3)
    return create_model(name, in_chans=3, image_size=(32, 32), head=head, **kw)


def _trainable_modules(model: nn.Module) -> set[str]:
    names = set()
    for name, module in model.named_modules():
        own = list(module.parameters(recurse=False))
        if own and all(p.requires_grad for p in own):
            names.add(name)
    return names


@pytest.mark.parametrize(
    "head, types, trainable",
    [
        ("linear", [nn.Dropout, nn.Linear], 512 * 3 + 3),
        ("lesson", [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear], 512 * 256 + 256 + 256 * 3 + 3),
        (
            "production",
            [nn.BatchNorm1d, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear],
            2 * 512 + 512 * 512 + 512 + 512 * 256 + 256 + 256 * 3 + 3,
        ),
    ],
)
def test_heads_structure_and_shapes(head: str, types: list[type], trainable: int) -> None:
    model = _make(head=head).eval()
    assert isinstance(model, HeadedModel) and model.num_features == 512
    assert [type(m) for m in model.head] == types or all(isinstance(m, t) for m, t in zip(model.head, types))
    assert len(model.head) == len(types)
    assert model.forward_features(X).shape == (4, 512)  # timm's pooling kept
    assert model(X).shape == (4, 3)
    assert torch.allclose(model.forward_head(model.forward_features(X)), model(X))
    freeze_backbone(model)
    assert count_parameters(model)[1] == trainable
    if head == "production":
        assert [m.p for m in model.head if isinstance(m, nn.Dropout)] == [0.5, pytest.approx(0.3)]
        model.train()
        set_frozen_bn_eval(model)
        assert model(X[:1]).shape == (1, 3)  # a last batch of one image does not crash the BN


def test_default_head_stays_plain_timm_and_splits() -> None:
    model = _make().eval()
    assert not isinstance(model, HeadedModel) and "fc.weight" in model.state_dict()
    assert torch.allclose(head_forward(model, pooled_features(model, X)), model(X), atol=1e-6)


@pytest.mark.parametrize("name, head", [("resnet18", "lesson"), ("resnet18", "default"), ("simple_cnn", "default")])
def test_sigmoid_binary_head_has_one_output(name: str, head: str) -> None:
    model = _make(name, head, num_classes=2, binary_head="sigmoid").eval()
    logits = model(X)
    assert logits.shape == (4, 1)
    probs = torch.softmax(as_class_logits(logits), dim=1)  # what every metric and prediction sees
    assert probs.shape == (4, 2) and torch.allclose(probs.sum(1), torch.ones(4))
    assert torch.allclose(probs[:, 1], torch.sigmoid(logits[:, 0]))


def test_bad_head_options_are_one_line_errors() -> None:
    with pytest.raises(CnnlabError, match="exactly 2 classes"):
        _make(binary_head="sigmoid")
    with pytest.raises(CnnlabError, match="--head must be"):
        _make(head="fancy")


def test_freeze_really_freezes_after_a_step() -> None:
    model = _make(head="lesson")
    freeze_backbone(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    groups = param_groups(model, 1e-2)
    trainable_ids = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for g in groups for p in g["params"]} == trainable_ids
    assert trainable_ids == {id(p) for p in model.head.parameters()}
    optimizer = torch.optim.Adam(groups)
    model.train()
    set_frozen_bn_eval(model)
    nn.functional.cross_entropy(model(X), torch.tensor([0, 1, 2, 0])).backward()
    optimizer.step()
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            assert p.grad is None and torch.equal(p, before[name]), name
    assert not torch.equal(model.head[0].weight, before["head.0.weight"])


def test_frozen_batchnorm_stats_do_not_move() -> None:
    model = _make()
    freeze_backbone(model)
    model.train()
    assert set_frozen_bn_eval(model) == 20  # resnet18: bn1 + 16 in blocks + 3 downsample
    stats = {n: b.clone() for n, b in model.named_buffers()}
    model(X * 3 + 1)
    assert all(torch.equal(b, stats[n]) for n, b in model.named_buffers())
    model.train()  # without the call, a train-mode forward moves them
    model(X * 3 + 1)
    assert not torch.equal(model.bn1.running_mean, stats["bn1.running_mean"])


def test_unfreeze_last_10_layers_of_resnet18_is_exactly_layer4() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=3)
    freeze_backbone(model)
    names = unfreeze_last_layers(model, 10)
    expected = [f"layer4.{b}.{m}" for b in (0, 1) for m in ("conv1", "bn1", "conv2", "bn2")]
    expected[4:4] = ["layer4.0.downsample.0", "layer4.0.downsample.1"]
    assert names == expected
    assert _trainable_modules(model) == set(expected) | {"fc"}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("layer4.", "fc."))}


def test_unfreeze_last_blocks_follows_timm_groups() -> None:
    model = _make("efficientnet_lite0", head="lesson")  # tf_efficientnet_lite0 in a HeadedModel
    blocks = backbone_blocks(model)
    assert blocks[0] == ["backbone.conv_stem", "backbone.bn1"] and len(blocks) == 17
    freeze_backbone(model)
    names = unfreeze_last_blocks(model, 1)
    # timm folds conv_head/bn2 into the last block's group
    assert names[0] == "backbone.blocks.6.0.conv_pw" and names[-2:] == ["backbone.conv_head", "backbone.bn2"]
    assert _trainable_modules(model) == set(names) | {"head.0", "head.3"}
    resnet = timm.create_model("resnet18", num_classes=3)
    freeze_backbone(resnet)
    blocks = {n.rsplit(".", 1)[0] for n in unfreeze_last_blocks(resnet, 2)}
    assert blocks == {"layer4.0", "layer4.0.downsample", "layer4.1"}


def test_layer_decay_groups_scale_by_depth_and_hold_only_trainable() -> None:
    model = _make("efficientnet_lite0", head="lesson")
    freeze_backbone(model)
    unfreeze_last_blocks(model, 2)
    groups = param_groups(model, 1e-3, layer_decay=0.5, weight_decay=0.01)
    assert sum(p.numel() for g in groups for p in g["params"]) == count_parameters(model)[1]
    lrs = sorted({g["lr"] for g in groups}, reverse=True)
    assert lrs == pytest.approx([1e-3, 5e-4, 2.5e-4])  # head, last block, the one below
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}  # no decay on biases and BN
    unfrozen_all = param_groups(_make(head="lesson"), 1e-3, layer_decay=0.9)
    assert min(g["lr"] for g in unfrozen_all) == pytest.approx(1e-3 * 0.9**9)  # resnet18: stem, 8 blocks, head
    with pytest.raises(CnnlabError, match="layer-decay"):
        param_groups(model, 1e-3, layer_decay=1.5)


@pytest.mark.parametrize("name", ["resnet18", "fast_cnn"])
def test_weight_decay_groups_are_timms(name: str) -> None:
    """Written out so an own CNN's run skips importing timm: the same groups as timm's function."""
    from timm.optim import param_groups_weight_decay

    model = _make(name)
    freeze_backbone(model)
    ours = param_groups(model, 1e-3, weight_decay=5e-4)
    theirs = [g for g in param_groups_weight_decay(model, weight_decay=5e-4) if g["params"]]
    assert [[id(p) for p in g["params"]] for g in ours] == [[id(p) for p in g["params"]] for g in theirs]
    assert [g["weight_decay"] for g in ours] == [0.0, 5e-4]
