"""Cutting a network where its frozen part ends: the bottom runs once, the top every epoch.

When fine-tuning trains only the top of a backbone (BatchNorm in inference mode, no
augmentation), the frozen bottom gives the same output for an image every epoch. Its output at the
cut can then be computed once and cached, and each epoch runs only the top. That needs the
backbone's ``forward_features`` to be a plain chain of modules, as it is for timm's CNNs
(EfficientNet/MobileNet: conv_stem, bn1, blocks[i][j], ..., conv_head, bn2; ResNet: conv1, bn1,
act1, maxpool, layer1..4; VGG: features[i]). :func:`cut_below_trainable` finds the chain, cuts it
at the block boundary below the first trainable layer and verifies the cut numerically on a
batch: the top of the bottom's output must give the model's own logits, and the bottom must be
deterministic in the mode the stage trains in. Any model where that fails is trained the plain way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnlab.models.heads import HeadedModel
from cnnlab.models.inference import eval_mode, is_channels_last, modes_kept

# timm children that belong to forward_head (pooling, pre-logits, classifier), not forward_features.
_HEAD_CHILDREN = ("global_pool", "pre_logits", "head_drop", "head", "fc", "classifier")
_TOLERANCE = 1e-4  # relative to the logits' scale: float rounding only


@dataclass
class Cut:
    """A model cut in two: ``top(bottom(x))`` gives the model's logits.

    ``where`` names the first module of the top (e.g. ``blocks.5.3``).
    """

    model: nn.Module
    bottom: nn.Sequential
    top: nn.Sequential
    finish: Any  # the backbone (an nn.Module) whose ``forward_head`` pools (and classifies)
    where: str

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        # The model's channels_last pre-hook does not see calls to its parts: match its layout here.
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.ndim == 4 else x

    @property
    def channels_last(self) -> bool:
        return is_channels_last(self.model)

    def bottom_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images -> activations at the cut."""
        return self.bottom(self._layout(x))

    def top_forward(self, z: torch.Tensor) -> torch.Tensor:
        """Activations at the cut -> logits, through the model's own pooling, dropout and head."""
        out = self.finish.forward_head(self.top(self._layout(z)))
        return self.model.head(out) if isinstance(self.model, HeadedModel) else out


def _flatten(name: str, module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    if type(module) is nn.Sequential:  # exactly Sequential: a subclass may have its own forward
        for child_name, child in module.named_children():
            yield from _flatten(f"{name}.{child_name}" if name else child_name, child)
    else:
        yield name, module


def feature_chain(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules ``net.forward_features`` is believed to chain, first to last (unverified)."""
    chain: list[tuple[str, nn.Module]] = []
    for name, child in net.named_children():
        if name in _HEAD_CHILDREN:
            break
        chain.extend(_flatten(name, child))
    return chain


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _random_while_training(modules: nn.Module) -> bool:
    # Dropout, DropPath, DropBlock... in training mode: random per call (a single comparison of
    # two passes can miss it when nothing happened to be dropped).
    return any(module.training and "drop" in type(module).__name__.lower() for module in modules.modules())


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = max(float(b.abs().max()), 1.0)
    return bool((a - b).abs().max() <= _TOLERANCE * scale)


def cut_below_trainable(model: nn.Module, sample: torch.Tensor) -> tuple[Cut | None, str]:
    """Cuts ``model`` below its first trainable module, verified on ``sample`` (normalised images).

    Call it with the model in the mode its stage trains in (``model.train()`` with frozen BatchNorm
    in eval mode): the bottom must be deterministic in that mode.

    Returns:
        (the cut, "") or (None, why the model is trained without one).
    """
    net = model.backbone if isinstance(model, HeadedModel) else model
    if not (hasattr(net, "forward_features") and hasattr(net, "forward_head")):
        return None, f"{type(net).__name__} has no forward_features/forward_head"
    chain = feature_chain(net)
    first = next((i for i, (_, module) in enumerate(chain) if _trainable(module)), len(chain))
    if first == 0:
        return None, "the whole backbone trains"
    names = [name for name, _ in chain]
    bottom = nn.Sequential(*[module for _, module in chain[:first]])
    top = nn.Sequential(*[module for _, module in chain[first:]])
    cut = Cut(model, bottom, top, net, names[first] if first < len(chain) else "the pooling")
    with torch.no_grad(), modes_kept(model):
        staged = cut.bottom_forward(sample)  # the bottom as the stage runs it
        with eval_mode(model):
            reference = model(cut._layout(sample))
            again = cut.bottom_forward(sample)
            joined = cut.top_forward(again)
    if not _close(joined, reference):
        return None, f"the chain of {type(net).__name__}'s modules does not reproduce its forward pass"
    if _random_while_training(bottom) or not _close(staged, again):
        return None, "the frozen bottom is not deterministic while training (dropout or batch statistics)"
    return cut, ""
