"""One factory for every model: cnnlab's own CNNs by name, everything else through timm."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from torch import nn

from cnnlab.errors import CnnlabError, suggest

_OWN_MODELS: dict[str, Callable[..., nn.Module]] = {}

# The lesson's Keras application names, mapped to timm models with ImageNet weights.
ALIASES: dict[str, str] = {
    "vgg16": "vgg16.tv_in1k",
    "vgg19": "vgg19.tv_in1k",
    "resnet50": "resnet50.tv_in1k",
    "resnet18": "resnet18.tv_in1k",
    "mobilenetv2": "mobilenetv2_100.ra_in1k",
    "mobilenet_v2": "mobilenetv2_100.ra_in1k",
    "mobilenetv3": "mobilenetv3_large_100.ra_in1k",
    "efficientnet_b0": "efficientnet_b0.ra_in1k",
    "efficientnet_lite0": "tf_efficientnet_lite0.in1k",
    "inceptionv3": "inception_v3.tv_in1k",
    "densenet121": "densenet121.tv_in1k",
    "convnext_tiny": "convnext_tiny.fb_in1k",
}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Registers a builder ``fn(num_classes, in_chans, image_size, dropout) -> nn.Module``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _OWN_MODELS[name] = builder
        return builder

    return wrap


def own_model_names() -> list[str]:
    """Names of cnnlab's own CNNs."""
    return sorted(_OWN_MODELS)


def own_builder(name: str) -> Callable[..., nn.Module] | None:
    """The builder of an own CNN, or None for a timm name."""
    return _OWN_MODELS.get(name)


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models())


def resolve_name(name: str) -> str:
    """Maps a user's model name to an own model, or a timm architecture (with its weight tag).

    Raises:
        CnnlabError: for an unknown name, with the closest known names.
    """
    key = name.strip()
    if key in _OWN_MODELS:
        return key
    if key.lower() in ALIASES:
        return ALIASES[key.lower()]
    architecture = key.split(".", 1)[0]
    if architecture in _timm_names():
        return key
    # The names a user most likely meant first: cnnlab's own CNNs and the lesson's names (among them
    # efficientnet_lite0, whose ImageNet weights are built in), before timm's thousand others.
    hint = suggest(
        key.lower(),
        [*_OWN_MODELS, *ALIASES, *_timm_names()],
        "see 'cnnlab models list'",
        n=3,
        first=[*_OWN_MODELS, *ALIASES],
    )
    raise CnnlabError(f"unknown model '{name}'{hint}")
