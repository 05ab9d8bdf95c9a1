"""``create_model``: the only way cnnlab makes a network, and the input it expects."""

from __future__ import annotations

import logging

from torch import nn

from cnnlab.data.preprocess import ModelInput
from cnnlab.errors import CnnlabError
from cnnlab.models import fast_cnn, simple_cnn  # noqa: F401  importing them registers their models
from cnnlab.models.heads import HeadedModel, build_head, feature_dim, output_count
from cnnlab.models.registry import own_builder, resolve_name
from cnnlab.models.weights import load_local_weights, load_pretrained_timm

log = logging.getLogger("cnnlab")


def model_input(name: str, pretrained: bool) -> ModelInput:
    """What the named model expects of its input, before it is built (and before data exists).

    Its request, not the run's format: the data fills what it leaves open, and the run records
    the result as its ``Preprocess`` (``training.build.preprocess_of``).
    """
    resolved = resolve_name(name)
    if own_builder(resolved) is not None:
        return ModelInput()
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    pretrained_cfg = get_pretrained_cfg(resolved)  # accepts "arch" and "arch.tag"
    # timm's own resolution: the weights' config, and timm's defaults where it says nothing.
    cfg = resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg is not None else {})
    return ModelInput(
        channels=3 if pretrained else None,  # ImageNet stems want RGB; grayscale is expanded
        image_size=int(cfg["input_size"][-1]) if pretrained else None,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=str(cfg["interpolation"]),
        crop_pct=float(cfg["crop_pct"]) if pretrained and cfg.get("crop_pct") else None,
    )


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int,
    image_size: tuple[int, int],
    pretrained: bool = False,
    weights: str | None = None,
    dropout: float = 0.5,
    head: str = "default",
    binary_head: str = "softmax",
) -> nn.Module:
    """Builds a model by name: an own CNN (``simple_cnn``, ...) or any timm model.

    Args:
        pretrained: start from ImageNet weights (built in for efficientnet_lite0; else the hub).
        weights: a local state dict (.safetensors/.pth); a classifier of another size is dropped.
        head: ``default`` keeps timm's classifier (a plain timm model); ``linear``, ``lesson`` or
            ``production`` wrap the pooled backbone in a ``HeadedModel``. Own CNNs keep their
            own head (they already are the lesson's network) and ignore this.
        binary_head: ``sigmoid`` gives a single logit for a 2-class task (train with BCE).

    Raises:
        CnnlabError: unknown name or head, unavailable weights, or a weights file that does not fit.
    """
    outputs = output_count(num_classes, binary_head)
    resolved = resolve_name(name)
    builder = own_builder(resolved)
    if builder is not None:
        if pretrained:
            raise CnnlabError(f"'{name}' is trained from scratch and has no pretrained weights; drop --pretrained")
        if head != "default":
            log.info("'%s' has its own head; --head %s is ignored", name, head)
        model = builder(num_classes=outputs, in_chans=in_chans, image_size=image_size, dropout=dropout)
    else:
        custom = head != "default"
        # A custom head brings its own dropout; the backbone's pooled output must stay clean.
        timm_classes, drop_rate = (0, 0.0) if custom else (outputs, dropout)
        if pretrained and weights is None:
            model = load_pretrained_timm(resolved, num_classes=timm_classes, in_chans=in_chans, drop_rate=drop_rate)
        else:
            import timm  # here, not at the top: own CNNs train without paying for timm's import (~2 s)

            model = timm.create_model(
                resolved, pretrained=False, num_classes=timm_classes, in_chans=in_chans, drop_rate=drop_rate
            )
        if custom:
            model = HeadedModel(model, build_head(head, feature_dim(model), outputs, dropout))
    if weights is not None:
        load_local_weights(model, weights)
    return model
