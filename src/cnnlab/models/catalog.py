"""What models exist, how big they are, and where their ImageNet weights would come from."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from typing import Any

import timm
import torch

from cnnlab.models.lite0_offline import LITE0_TIMM_NAME, lite0_available
from cnnlab.models.registry import ALIASES, own_builder, own_model_names


def _count(name: str) -> str:
    """Parameters (ImageNet head), built on the meta device: no memory, no weights, fast."""
    try:
        with torch.device("meta"):
            builder = own_builder(name)
            if builder is not None:
                model = builder(num_classes=10, in_chans=1, image_size=(28, 28), dropout=0.5)
            else:
                model = timm.create_model(name, pretrained=False)
        return _short(sum(p.numel() for p in model.parameters()))
    except Exception:  # noqa: BLE001  a few models compute values at build time and cannot run on meta
        return "?"


def _short(count: int) -> str:
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count / 1e3:.0f}k"


def _cfg(name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def _weights(name: str, cfg: dict[str, Any]) -> str:
    """built-in / cached (offline) / hub (online only) / - (none)."""
    if name.split(".")[0] == LITE0_TIMM_NAME and lite0_available():
        return "built-in"
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        files = [cfg.get("hf_hub_filename") or "model.safetensors", "pytorch_model.bin"]
        if any(isinstance(try_to_load_from_cache(hub_id, f), str) for f in files):
            return "cached"
    if url and os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))):
        return "cached"
    return "hub" if hub_id or url else "-"


def _row(shown: str, target: str) -> list[str]:
    cfg = _cfg(target)
    size = cfg.get("input_size")
    timm_name = target if target != shown else ""
    return [shown, timm_name, _count(target), str(size[-1]) if size else "", _weights(target, cfg)]


def _matcher(pattern: str | None) -> Callable[[str], bool]:
    """Whether a name matches ``--filter`` (a plain TEXT is found anywhere; wildcards * ? [ ] as typed)."""
    if not pattern:
        return lambda name: True
    if not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    return lambda name: fnmatch.fnmatch(name.lower(), pattern.lower())


def alias_groups() -> dict[str, list[str]]:
    """The lesson's names by the timm model they stand for: ``mobilenetv2`` and ``mobilenet_v2`` are one model."""
    groups: dict[str, list[str]] = {}
    for alias, target in ALIASES.items():
        groups.setdefault(target, []).append(alias)
    return groups


def catalog(pretrained: bool, pattern: str | None, limit: int) -> tuple[list[list[str]], int]:
    """Table rows and how many timm matches were left out.

    Own CNNs, then the lesson's names (one row per model, its names together), then timm's names; all
    filtered by ``pattern``. A timm name that is also a lesson name (``efficientnet_lite0``) is listed
    once, as the lesson's: that is the model the name gives (with its built-in weights).
    """
    matches = _matcher(pattern)
    rows: list[list[str]] = []
    if not pretrained:  # own CNNs are trained from scratch
        rows += [[name, "cnnlab (own)", _count(name), "data's", "-"] for name in own_model_names() if matches(name)]
    rows += [
        _row(", ".join(names), target)
        for target, names in alias_groups().items()
        if any(matches(name) for name in [*names, target])
    ]
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    names = [name for name in timm.list_models(pattern or "", pretrained=pretrained) if name not in ALIASES]
    rows += [_row(name, name) for name in names[:limit]]
    return rows, max(0, len(names) - limit)
