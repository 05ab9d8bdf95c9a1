"""A resized architecture as data: how a pruned network differs from the one its config builds.

Structured pruning changes layer widths, so the config alone no longer rebuilds the network.
Rather than pickling modules (``torch.load`` would then have to run arbitrary code), a pruned
run stores the changed shape attributes of each resized module in ``architecture.json``; the
network is rebuilt by creating the original model, setting those attributes, and giving every
parameter and buffer the shape of the stored (plain-tensor) weights. The module objects are kept,
so any layer class (timm's Conv2dSame, BatchNormAct2d, ...) is handled without special cases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.io import atomic_write_json
from cnnlab.models.weights import read_state_dict
from cnnlab.training.run_dir import RunFiles

FORMAT = "cnnlab-architecture/1"
# The attributes that size a layer (Conv, Linear, BatchNorm, LayerNorm, GroupNorm).
SHAPE_ATTRIBUTES = (
    "in_channels",
    "out_channels",
    "groups",
    "num_features",
    "in_features",
    "out_features",
    "normalized_shape",
    "num_channels",
    "num_groups",
)


def _shape_attributes(module: nn.Module) -> dict[str, Any]:
    found = {}
    for name in SHAPE_ATTRIBUTES:
        value = module.__dict__.get(name)
        if isinstance(value, (int, tuple, list)) and not isinstance(value, bool):
            found[name] = list(value) if isinstance(value, tuple) else value
    return found


def resized_modules(original: nn.Module, changed: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module name: {attribute: new value}}`` for every module whose shape attributes differ."""
    before = dict(original.named_modules())
    diff = {}
    for name, module in changed.named_modules():
        if name not in before:
            raise CnnlabError(f"module '{name}' is not in the original architecture; only resized layers can be stored")
        new, old = _shape_attributes(module), _shape_attributes(before[name])
        delta = {key: value for key, value in new.items() if old.get(key) != value}
        if delta:
            diff[name] = delta
    return diff


def write_architecture(path: Path, original: nn.Module, changed: nn.Module, note: dict[str, Any]) -> int:
    """Writes the description of ``changed`` against ``original``; returns how many modules differ."""
    resized = resized_modules(original, changed)
    atomic_write_json(path, {"format": FORMAT, **note, "resized": resized})
    return len(resized)


def read_architecture(path: Path) -> dict[str, dict[str, Any]] | None:
    """The resized modules stored at ``path``, or None when there is no such file (an unpruned run).

    Raises:
        CnnlabError: when the file is not a cnnlab architecture description.
    """
    import json

    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CnnlabError(f"{path} is not valid JSON ({exc}); prune the model again") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("resized"), dict):
        raise CnnlabError(f"{path} is not a cnnlab architecture description ({FORMAT})")
    resized: dict[str, dict[str, Any]] = data["resized"]
    return resized


def apply_architecture(model: nn.Module, resized: dict[str, dict[str, Any]], state: dict[str, torch.Tensor]) -> None:
    """Resizes ``model`` in place so that ``state`` (weights of the resized network) loads strictly.

    Raises:
        CnnlabError: when the description names a module the model does not have.
    """
    modules = dict(model.named_modules())
    for name, attributes in resized.items():
        if name not in modules:
            raise CnnlabError(
                f"the stored architecture names a layer '{name}' this model does not have; "
                "was the run's config.yaml changed?"
            )
        for key, value in attributes.items():
            setattr(modules[name], key, tuple(value) if isinstance(value, list) else value)
    for key, tensor in state.items():
        owner, _, leaf = key.rpartition(".")
        module = modules.get(owner)
        if module is None:
            continue  # load_state_dict names the stray key
        if module._parameters.get(leaf) is not None and module._parameters[leaf].shape != tensor.shape:
            old = module._parameters[leaf]
            module._parameters[leaf] = nn.Parameter(torch.empty(tensor.shape, dtype=old.dtype), old.requires_grad)
        elif module._buffers.get(leaf) is not None and module._buffers[leaf].shape != tensor.shape:
            module._buffers[leaf] = torch.empty(tensor.shape, dtype=module._buffers[leaf].dtype)


def resize_to_run(model: nn.Module, files: RunFiles) -> bool:
    """Gives a pruned run's network (as its config builds it) its stored widths and pruned weights.

    Returns False, changing nothing, for a run that was not pruned.
    """
    resized = read_architecture(files.architecture)
    if not resized:
        return False
    state = read_state_dict(files.pruned_weights)
    apply_architecture(model, resized, state)
    model.load_state_dict(state)
    return True
