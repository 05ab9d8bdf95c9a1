"""What models exist, how big they are, and where their ImageNet weights would come from."""

from __future__ import annotations

import os
from typing import Any

import timm
import torch

from cnnlab.models.lite0_weights import LITE0_TIMM_NAME, lite0_available
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


def catalog(pretrained: bool, pattern: str | None, limit: int) -> tuple[list[list[str]], int]:
    """Table rows and how many timm matches were left out."""
    rows: list[list[str]] = []
    if not pretrained:  # own CNNs are trained from scratch
        rows += [[name, "cnnlab (own)", _count(name), "data's", "-"] for name in own_model_names()]
    rows += [_row(alias, target) for alias, target in ALIASES.items()]
    if pattern and not any(c in pattern for c in "*?["):
        pattern = f"*{pattern}*"
    names = timm.list_models(pattern or "", pretrained=pretrained)
    rows += [_row(name, name) for name in names[:limit]]
    return rows, max(0, len(names) - limit)
