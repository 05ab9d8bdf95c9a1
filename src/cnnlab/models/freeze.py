"""What trains: freeze the backbone, unfreeze its top layers or blocks, build optimizer groups.

Terms used here:

* the **head** is ``classifier_of(model)`` (a HeadedModel's head, timm's classifier, an own
  CNN's ``classifier``); everything else is the **backbone**.
* a **layer** is a module that owns parameters directly (Conv2d, Linear, BatchNorm, ...), in
  registration order, which for timm CNNs is the order of the forward pass. Keras also counts
  layers without weights (ReLU, pooling, Add); those have nothing to unfreeze, so
  ``unfreeze_last_layers(model, 10)`` here means "the last 10 layers that have weights" and
  reaches a little further down than Keras' ``base.layers[-10:]``.
* a **block** is one group of timm's ``group_matcher(coarse=False)`` (e.g. one inverted-residual
  block of EfficientNet, one BasicBlock of ResNet), the same groups layer-wise LR decay uses.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cnnlab.errors import CnnlabError
from cnnlab.models.heads import classifier_of


def _head_ids(model: nn.Module) -> set[int]:
    return {id(p) for p in classifier_of(model).parameters()}


def _own_params(module: nn.Module) -> list[nn.Parameter]:
    return list(module.parameters(recurse=False))


def backbone_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's layers (modules owning parameters), first to last."""
    head = _head_ids(model)
    layers = []
    for name, module in model.named_modules():
        params = _own_params(module)
        if params and not any(id(p) in head for p in params):
            layers.append((name, module))
    return layers


def backbone_blocks(model: nn.Module) -> list[list[str]]:
    """The backbone's blocks, first to last, each as the names of its layers (see module doc)."""
    from timm.models import group_modules

    layers = backbone_layers(model)
    matcher = getattr(model, "group_matcher", None)
    if matcher is None:  # e.g. an own CNN: each top-level child is a block
        order = {name: index for index, (name, _) in enumerate(model.named_children())}
        group = {name: order[name.split(".", 1)[0]] for name, _ in layers}
    else:
        group = group_modules(model, matcher(coarse=False), reverse=True)
    blocks: dict[float, list[str]] = {}
    for name, _ in layers:
        blocks.setdefault(group.get(name, float("inf")), []).append(name)
    return [blocks[key] for key in sorted(blocks)]


def _set_trainable(modules: list[nn.Module], trainable: bool) -> None:
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(trainable)


def freeze_backbone(model: nn.Module) -> None:
    """Everything but the head frozen (requires_grad False); the head trainable.

    Call ``set_frozen_bn_eval(model)`` after any ``model.train()`` so frozen BatchNorm layers
    keep their running statistics (the ``FrozenBatchNormEval`` callback does it in Lightning).
    """
    head = classifier_of(model)
    _set_trainable([model], False)
    _set_trainable([head], True)
    if not any(p.requires_grad for p in head.parameters()):
        raise CnnlabError(f"{type(model).__name__}'s classifier has no weights to train")


def unfreeze_all(model: nn.Module) -> None:
    """Every parameter trainable (a 'full' stage)."""
    _set_trainable([model], True)


def unfreeze_last_layers(model: nn.Module, n: int) -> list[str]:
    """Makes the backbone's last ``n`` layers (Keras sense, weights only) trainable.

    Returns:
        The names of the unfrozen layers, first to last. Other parameters are left as they are.
    """
    if n < 0:
        raise CnnlabError(f"--finetune-layers must be 0 or more, got {n}")
    chosen = backbone_layers(model)[-n:] if n else []
    _set_trainable([m for _, m in chosen], True)
    return [name for name, _ in chosen]


def unfreeze_last_blocks(model: nn.Module, k: int) -> list[str]:
    """Makes the backbone's last ``k`` blocks (timm's group_matcher groups) trainable.

    Returns:
        The names of the unfrozen layers, first to last.
    """
    if k < 0:
        raise CnnlabError(f"--finetune-blocks must be 0 or more, got {k}")
    names = [name for block in (backbone_blocks(model)[-k:] if k else []) for name in block]
    modules = dict(model.named_modules())
    _set_trainable([modules[name] for name in names], True)
    return names


def set_frozen_bn_eval(model: nn.Module, include_trainable: bool = False) -> int:
    """Puts frozen BatchNorm layers in eval mode, so their running statistics stay put.

    ``model.train()`` puts every layer in training mode; a frozen BN layer would then still
    normalise with batch statistics and overwrite its running mean/var. Call this after every
    ``model.train()``. ``include_trainable=True`` also puts the backbone's trainable BN layers in
    eval mode (Keras' advice for fine-tuning, ``base(x, training=False)``: their weights still
    learn, their statistics stay ImageNet's); a head's own BN is never affected by it.
    BN layers without affine weights are left alone.

    Returns:
        How many BatchNorm layers were put in eval mode.
    """
    head = _head_ids(model) if include_trainable else set()
    count = 0
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            params = _own_params(module)
            frozen = not any(p.requires_grad for p in params)
            in_backbone = not any(id(p) in head for p in params)
            if params and (frozen or (include_trainable and in_backbone)):
                module.eval()
                count += 1
    return count


def param_groups(
    model: nn.Module, lr: float, layer_decay: float | None = None, weight_decay: float = 0.0
) -> list[dict[str, Any]]:
    """Optimizer parameter groups holding only trainable parameters, each with its own ``lr``.

    With ``layer_decay`` (e.g. 0.75), timm's ``param_groups_layer_decay`` scales each block's
    LR by ``layer_decay ** depth_from_top`` (head 1.0); the scale is kept as ``lr_scale``.
    With ``weight_decay`` > 0, biases and norm weights get none (timm's grouping).
    Pass the groups to any torch optimizer; for OneCycleLR use ``max_lr=[g["lr"] for g in groups]``.

    Raises:
        CnnlabError: nothing is trainable, or layer_decay is outside (0, 1].
    """
    if not any(p.requires_grad for p in model.parameters()):
        raise CnnlabError("no trainable parameters: every layer is frozen")
    if layer_decay is not None:
        if not 0 < layer_decay <= 1:
            raise CnnlabError(f"--layer-decay must be in (0, 1], got {layer_decay}")
        from timm.optim import param_groups_layer_decay  # here: importing timm costs an own CNN's run 1-3 s

        groups = param_groups_layer_decay(model, weight_decay=weight_decay, layer_decay=layer_decay)
    elif weight_decay > 0:
        groups = weight_decay_groups(model, weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]
    return [{**group, "lr": lr * float(group.get("lr_scale", 1.0))} for group in groups if group["params"]]


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The trainable parameters in two groups: biases and norm weights (1-d) without decay, the rest with it.

    timm's ``param_groups_weight_decay`` rule, written out: ``import timm.optim`` imports every timm
    model definition (1-3 s here), which an own CNN's run (``--recipe fast``) otherwise never pays.
    """
    no_decay: list[nn.Parameter] = []
    decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
