"""A Keras-style ``model.summary()``: layer, output shape, parameters, trainable vs frozen."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_summary(model: nn.Module, input_shape: tuple[int, int, int], depth: int = 3) -> str:
    """The summary table as text, computed with torchinfo on one input of ``input_shape``."""
    from torchinfo import summary

    was_training = model.training
    stats = summary(
        model,
        input_size=(1, *input_shape),
        col_names=("output_size", "num_params", "trainable"),
        depth=depth,
        mode="eval",  # no dropout draws: a summary must not shift the random stream
        verbose=0,
        device="cpu",
    )
    model.train(was_training)  # torchinfo leaves the model in eval mode
    return str(stats)  # ends with trainable and non-trainable (frozen) parameter counts
