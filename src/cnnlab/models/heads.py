"""Classifier heads on timm backbones: the lesson's, a production one, a linear one, or timm's own.

A custom head replaces the timm classifier but keeps timm's pooling: the backbone is the timm
model after ``reset_classifier(0)``, so ``backbone(x)`` is the pooled feature vector (N, D).
``HeadedModel`` then splits cleanly into ``forward_features`` (pooled vector) and
``forward_head`` (logits), which is what the feature cache needs.

Models with timm's own classifier (``head='default'``) stay plain timm models (their state-dict
keys are unchanged); ``pooled_features``/``head_forward``/``classifier_of`` treat both kinds alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.config.sections import Head
from cnnlab.errors import CnnlabError

HEADS: tuple[str, ...] = get_args(Head)  # the allowed values, from the config schema
_HEAD_GROUP = 10**9  # group ordinal of the head: after every backbone group


class _SafeBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that uses its running statistics for a training batch of one row.

    A shuffled epoch can end in a batch of a single image, where batch statistics are undefined
    (torch raises); using the running estimates for that one batch is harmless.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def output_count(num_classes: int, binary_head: str = "softmax") -> int:
    """Logits the classifier emits: 1 for a sigmoid binary head, else one per class.

    Raises:
        CnnlabError: ``binary_head`` is unknown, or 'sigmoid' with other than 2 classes.
    """
    if binary_head not in ("softmax", "sigmoid"):
        raise CnnlabError(f"--binary-head must be softmax or sigmoid, got '{binary_head}'")
    if binary_head == "sigmoid":
        if num_classes != 2:
            raise CnnlabError(f"--binary-head sigmoid needs exactly 2 classes, the data has {num_classes}; use softmax")
        return 1
    return num_classes


def build_head(kind: str, in_features: int, num_outputs: int, dropout: float = 0.5) -> nn.Module:
    """A head on pooled features (N, in_features) -> logits (N, num_outputs).

    kind: ``linear`` Dropout-Dense(n); ``lesson`` Dense256-ReLU-Dropout-Dense(n);
    ``production`` BN-Dense512-ReLU-Dropout-Dense256-ReLU-Dropout(0.6 x dropout)-Dense(n)
    (0.5 and 0.3 at the default dropout 0.5).
    """
    if kind == "linear":
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_outputs))
    if kind == "lesson":
        return nn.Sequential(
            nn.Linear(in_features, 256), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, num_outputs)
        )
    if kind == "production":
        return nn.Sequential(
            _SafeBatchNorm1d(in_features),
            nn.Linear(in_features, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout * 0.6),
            nn.Linear(256, num_outputs),
        )
    raise CnnlabError(f"--head must be one of {', '.join(HEADS)}, got '{kind}'")


def feature_dim(backbone: nn.Module) -> int:
    """Width of the pooled vector a timm model gives after ``reset_classifier(0)``."""
    # head_hidden_size differs from num_features when a conv/linear sits after the pooling
    # (e.g. MobileNetV3's conv_head); it is the width the classifier sees.
    size = getattr(backbone, "head_hidden_size", None) or getattr(backbone, "num_features", None)
    if not size:
        raise CnnlabError(f"cannot tell the feature width of {type(backbone).__name__}; use --head default")
    return int(size)


class HeadedModel(nn.Module):
    """A timm backbone (classifier removed, pooling kept) followed by a cnnlab head."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head
        self.num_features = feature_dim(backbone)
        cfg = dict(getattr(backbone, "pretrained_cfg", None) or {})
        cfg["classifier"] = "head"  # so timm helpers and weight loading find the head here
        self.pretrained_cfg = cfg

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> pooled feature vector (N, D)."""
        return self.backbone(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features (N, D) -> logits."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm-style matcher: the backbone's own groups, then the head as the last group.

        Returned as a callable (timm accepts one) because the backbone's regexes cannot simply be
        prefixed with ``backbone.``; it maps parameter names and module names alike.
        """
        from timm.models import group_modules, group_parameters

        ordinal: dict[str, int] = {}
        matcher = getattr(self.backbone, "group_matcher", None)
        if matcher is not None:
            spec = matcher(coarse=coarse)
            ordinal.update(group_parameters(self.backbone, spec, reverse=True))
            ordinal.update(group_modules(self.backbone, spec, reverse=True))
        else:  # no structure known: each top-level child is one group
            for index, (child, module) in enumerate(self.backbone.named_children()):
                ordinal.update({f"{child}.{n}".rstrip("."): index for n, _ in module.named_modules()})
                ordinal.update({f"{child}.{n}": index for n, _ in module.named_parameters()})

        def match(name: str) -> int:
            if name.startswith("backbone."):
                return ordinal.get(name.removeprefix("backbone."), _HEAD_GROUP - 1)
            return _HEAD_GROUP

        return match


def classifier_of(model: nn.Module) -> nn.Module:
    """The module trained in stage 1: a HeadedModel's head, timm's classifier, an own CNN's head.

    Raises:
        CnnlabError: the model has no recognisable classifier.
    """
    get_classifier = getattr(model, "get_classifier", None)
    if get_classifier is not None:
        return get_classifier()
    for name in ("head", "classifier", "fc"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Module):
            return module
    raise CnnlabError(f"{type(model).__name__} has no classifier (head/classifier/fc) to train on its own")


def splits_into_features_and_head(model: nn.Module) -> bool:
    """Whether :func:`pooled_features` and :func:`head_forward` work for ``model``."""
    return isinstance(model, HeadedModel) or (hasattr(model, "forward_head") and hasattr(model, "forward_features"))


def pooled_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Normalised images -> the vector the classifier sees (N, D), for any supported model."""
    if isinstance(model, HeadedModel):
        return model.forward_features(x)
    if hasattr(model, "forward_head") and hasattr(model, "forward_features"):  # a timm model, or an own CNN
        net: Any = model
        return net.forward_head(net.forward_features(x), pre_logits=True)
    raise CnnlabError(
        f"{type(model).__name__} cannot split into features and head (no forward_features/forward_head); "
        "use --no-feature-cache"
    )


def head_forward(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Pooled features -> logits; ``head_forward(m, pooled_features(m, x)) == m(x)``."""
    net: Any = model  # a HeadedModel, a timm model or an own CNN
    if isinstance(model, HeadedModel) or not hasattr(model, "get_classifier"):  # own CNNs: their own head
        return net.forward_head(features)
    # timm CNNs apply their drop_rate right before the classifier, after pre-logits.
    drop = float(getattr(model, "drop_rate", 0.0) or 0.0)
    if drop > 0:
        features = F.dropout(features, p=drop, training=model.training)
    return net.get_classifier()(features)
