"""How a run's network and its input are defined, the same at training and at reopening."""

from __future__ import annotations

from typing import cast

import torch

from cnnlab.config import RunConfig
from cnnlab.config.sections import Channels
from cnnlab.data.normalize import default_stats
from cnnlab.data.preprocess import RESIZES, Preprocess
from cnnlab.data.types import PreparedData
from cnnlab.models import create_model, model_input


def preprocess_of(data: PreparedData, config: RunConfig) -> Preprocess:
    """How images must look to the model: the model's request filled in by the data, recorded in run.json
    so evaluate/predict need only the run folder."""
    wanted = model_input(config.model.name, config.model.pretrained or bool(config.model.weights))
    mean, std = default_stats(data.channels, wanted.mean, wanted.std)
    height, width = data.input_size
    return Preprocess(
        image_size=height if height == width else (height, width),
        channels=cast(Channels, data.channels),  # 1 or 3: prepare_data converts to one of them
        mean=tuple(mean),
        std=tuple(std),
        interpolation=wanted.interpolation,
        crop_pct=data.crop_pct,
        crop_mode=data.crop_mode,
        resize=RESIZES[data.crop_mode],
    )


def build_model(config: RunConfig, num_classes: int, preprocess: Preprocess) -> torch.nn.Module:
    """The run's network, built the same way at training and when a run is reopened."""
    return create_model(
        config.model.name,
        num_classes=num_classes,
        in_chans=preprocess.channels,
        image_size=preprocess.size,
        pretrained=config.model.pretrained,
        weights=config.model.weights,
        dropout=config.model.dropout,
        head=config.model.head,
        binary_head=config.model.binary_head,
    )
