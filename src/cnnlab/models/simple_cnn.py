"""The lesson's own CNNs, registered by name beside every timm model."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.registry import register_model


def _flat_features(features: nn.Module, in_chans: int, image_size: tuple[int, int]) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_chans, *image_size)).numel())


def _conv_stack(in_chans: int, padding: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chans, 32, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=padding),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """Conv32 3x3-ReLU-MaxPool-Conv64 3x3-ReLU-MaxPool-Flatten-Dense128-ReLU-Dropout-Dense(n).

    Exactly the lesson's Keras model ('valid' convolutions) when the image is large enough;
    smaller images (e.g. 8x8 digits) switch to 'same' padding so the stack does not vanish.
    """

    def __init__(
        self, num_classes: int, in_chans: int = 1, image_size: tuple[int, int] = (28, 28), dropout: float = 0.5
    ) -> None:
        super().__init__()
        valid_side = ((min(image_size) - 2) // 2 - 2) // 2  # side after the valid stack
        self.features = _conv_stack(in_chans, padding=0 if valid_side >= 1 else 1)
        flat = _flat_features(self.features, in_chans, image_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(128, num_classes)
        )

    # timm's interface, so transfer stages, the feature cache and explain treat it like a timm model.
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("simple_cnn")
def simple_cnn(num_classes: int, in_chans: int, image_size: tuple[int, int], dropout: float = 0.5) -> nn.Module:
    """The lesson's simple CNN (about 225k parameters on MNIST)."""
    return SimpleCNN(num_classes, in_chans, image_size, dropout)
