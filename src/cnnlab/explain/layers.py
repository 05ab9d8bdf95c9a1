"""Which layers of a network can be looked at, found by running it once with hooks on every module.

One probe forward pass records, for every module, the feature map it outputs and whether a later
operation changes that map in place (``ReLU(inplace=True)`` after a conv): a hook on such a layer
would save values that are overwritten afterwards, so only layers whose output stays as it was are
offered. A module whose output is the very tensor of its parent (the last layer of a block) is
listed under the block's name too, so whole blocks can be hooked. The same rules hold for the own
CNNs and for every timm model, whatever their memory layout.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from cnnlab.errors import CnnlabError, suggest
from cnnlab.models.heads import classifier_of
from cnnlab.models.inference import eval_mode, is_channels_last

MAX_LISTED = 30  # layer names in an error message


@dataclass(frozen=True)
class Layer:
    """One module of the network as the probe saw it: its output (C, H, W) and whether it can be hooked."""

    name: str
    module: nn.Module
    shape: tuple[int, ...]  # output without the batch dimension
    order: int  # when it finished in the forward pass (children before their block)
    changed_later: bool  # its output is modified in place by a later operation
    group: int  # layers with the same output tensor (a block and its last layer) share a group

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3

    @property
    def kind(self) -> str:
        return type(self.module).__name__


@contextlib.contextmanager
def eager(model: nn.Module) -> Iterator[nn.Module]:
    """The model's eager module: hooks are ignored inside a ``torch.compile``-d call, so it is bypassed."""
    model = getattr(model, "_orig_mod", model)  # torch.compile(model) wraps; model.compile() does not
    compiled = model.__dict__.get("_compiled_call_impl")
    if compiled is not None:
        model._compiled_call_impl = None
    try:
        yield model
    finally:
        if compiled is not None:
            model._compiled_call_impl = compiled


def sample_input(model: nn.Module, channels: int, side: int) -> torch.Tensor:
    """A zero image batch of one, in the model's memory layout."""
    layout = torch.channels_last if is_channels_last(model) else torch.contiguous_format
    return torch.zeros(1, channels, side, side).contiguous(memory_format=layout)


def probe(model: nn.Module, x: torch.Tensor) -> list[Layer]:
    """Every module that returned a tensor in one forward pass of ``x``, in the order they finished."""
    seen: dict[str, tuple[nn.Module, torch.Tensor, int]] = {}

    def record(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(module: nn.Module, args: object, output: object) -> None:
            if name not in seen and isinstance(output, torch.Tensor):  # a shared module: its first call
                seen[name] = (module, output, output._version)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    try:
        with eval_mode(model), torch.inference_mode(False), torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    groups: dict[int, int] = {}
    layers = []
    for order, (name, (module, output, version)) in enumerate(seen.items()):
        group = groups.setdefault(id(output), len(groups))
        layers.append(Layer(name, module, tuple(output.shape[1:]), order, output._version != version, group))
    return layers


def _inside(name: str, parents: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in parents)


def _head_names(model: nn.Module) -> set[str]:
    try:
        head = classifier_of(model)
    except CnnlabError:
        return set()
    return {name for name, module in model.named_modules() if module is head}


def _is_global_pool(layer: Layer) -> bool:
    return "Pool" in layer.kind and layer.spatial and layer.shape[1:] == (1, 1)


def feature_stages(model: nn.Module, layers: list[Layer]) -> list[Layer]:
    """The hookable feature maps before the classifier: one per output tensor, named by its outermost block.

    Stops at the first global pooling, so heads that run convolutions on the pooled vector
    (MobileNetV3's conv_head, VGG's pre-logits) are left out, and skips 1x1 maps.
    """
    head, out, named = _head_names(model), [], set()
    for layer in layers:
        if _is_global_pool(layer):
            break
        if layer.group in named or _inside(layer.name, head) or not layer.spatial or layer.changed_later:
            continue
        if layer.shape[1] * layer.shape[2] <= 1:
            continue
        same = [other for other in layers if other.group == layer.group and not other.changed_later]
        out.append(min(same, key=lambda other: (other.name.count("."), other.order)))  # the whole block
        named.add(layer.group)
    return out


def gradcam_layer(model: nn.Module, layers: list[Layer]) -> Layer:
    """The last convolutional stage: ResNet's ``layer4``, EfficientNet's ``bn2``, an own CNN's ``features``.

    Raises:
        CnnlabError: the network has no spatial feature map (e.g. not a CNN).
    """
    stages = feature_stages(model, layers)
    if not stages:
        raise CnnlabError(f"{type(model).__name__} has no convolutional feature map to explain")
    return stages[-1]


def _timm_stages(model: nn.Module) -> list[str]:
    """The modules timm names as its feature stages (``feature_info``), prefixed as in ``model``."""
    for prefix, owner in (("", model), ("backbone.", getattr(model, "backbone", None))):
        info = getattr(owner, "feature_info", None)
        if isinstance(info, list) and info and all(isinstance(i, dict) and "module" in i for i in info):
            return [prefix + i["module"] for i in info]
    return []


def spread_stages(model: nn.Module, layers: list[Layer], count: int = 4) -> list[Layer]:
    """``count`` feature stages from early to late, ending with :func:`gradcam_layer`.

    timm models: the stages of their ``feature_info``; own CNNs: the last stage at each resolution.
    """
    stages = feature_stages(model, layers)
    by_group = {stage.group: stage for stage in stages}
    by_name = {layer.name: layer for layer in layers}
    named = [by_group[by_name[n].group] for n in _timm_stages(model) if n in by_name and by_name[n].group in by_group]
    if not named:
        last_at: dict[tuple[int, ...], Layer] = {}
        for stage in stages:
            last_at.pop(stage.shape[1:], None)
            last_at[stage.shape[1:]] = stage  # re-inserted: ordered by where each resolution ends
        named = list(last_at.values())
    ends = sorted(
        {stage.group: stage for stage in [*named, gradcam_layer(model, layers)]}.values(), key=lambda layer: layer.order
    )
    if len(ends) <= count:
        return ends
    picks = sorted({round(i * (len(ends) - 1) / (count - 1)) for i in range(count)})
    return [ends[i] for i in picks]


def find_layer(model: nn.Module, layers: list[Layer], name: str) -> Layer:
    """The layer called ``name``, checked to give a feature map a hook can read.

    Raises:
        CnnlabError: unknown name (with the valid ones), not a spatial map, or changed in place later.
    """
    by_name = {layer.name: layer for layer in layers}
    valid = [layer.name for layer in layers if layer.spatial and not layer.changed_later]
    layer = by_name.get(name)
    if layer is None:
        stages = [s.name for s in feature_stages(model, layers)]
        listed = ", ".join(stages[:MAX_LISTED]) + (f", ... ({len(stages)} in all)" if len(stages) > MAX_LISTED else "")
        raise CnnlabError(
            f"--layer: no layer '{name}' in this {type(model).__name__}"
            + suggest(name, valid, f"its feature stages are: {listed}")
        )
    if not layer.spatial:
        raise CnnlabError(
            f"--layer {name} gives a {len(layer.shape)}-D output, not a feature map; "
            f"choose a convolutional layer such as {gradcam_layer(model, layers).name}"
        )
    if layer.changed_later:
        after = next(
            (
                other.name
                for other in layers
                if other.order > layer.order
                and other.spatial
                and not other.changed_later
                and other.shape == layer.shape
            ),
            None,
        )
        hint = f"use '{after}' (the same map after that operation)" if after else "choose its block instead"
        raise CnnlabError(
            f"--layer {name}: its output is changed in place by a later operation (e.g. "
            f"ReLU(inplace=True)), so a hook would read overwritten values; {hint}"
        )
    return layer
