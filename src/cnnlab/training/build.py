"""How a run's network and its input are defined, the same at training and at reopening."""

from __future__ import annotations

from typing import Any

import torch

from cnnlab.config import RunConfig
from cnnlab.data.normalize import default_stats
from cnnlab.data.types import PreparedData
from cnnlab.models import create_model, model_input


def preprocess_meta(data: PreparedData, config: RunConfig) -> dict[str, Any]:
    """How images must look to the model: stored so evaluate/predict need only the run folder."""
    wanted = model_input(config.model.name, config.model.pretrained or bool(config.model.weights))
    mean, std = default_stats(data.channels, wanted.mean, wanted.std)
    height, width = data.input_size
    return {
        "image_size": height if height == width else [height, width],
        "channels": data.channels,
        "mean": mean,
        "std": std,
        "interpolation": wanted.interpolation,
        "resize": "shorter side to size, then center crop",
        # stored at floor(image_size / crop_pct), the model sees the centre crop (cnnlab.data.crop)
        "crop_pct": data.crop_pct,
    }


def build_model(config: RunConfig, num_classes: int, preprocess: dict[str, Any]) -> torch.nn.Module:
    """The run's network, built the same way at training and when a run is reopened."""
    size = preprocess["image_size"]
    image_size = (size, size) if isinstance(size, int) else tuple(size)
    return create_model(
        config.model.name,
        num_classes=num_classes,
        in_chans=preprocess["channels"],
        image_size=image_size,
        pretrained=config.model.pretrained,
        weights=config.model.weights,
        dropout=config.model.dropout,
        head=config.model.head,
        binary_head=config.model.binary_head,
    )
