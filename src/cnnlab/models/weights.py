"""Starting weights: the hub (online), the built-in EfficientNet-Lite0, or a local file.

Files are read as plain tensors only (safetensors, or ``torch.load(weights_only=True)``): a file
that needs arbitrary unpickling is refused, since unpickling can run code.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.models.heads import HeadedModel

log = logging.getLogger("cnnlab")


def _hub_reachable(host: str = "huggingface.co", seconds: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=seconds).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_mode() -> Iterator[None]:
    """Offline, the hub client retries for about a minute and logs each try; instead, look only
    in the local cache (weights downloaded earlier still load) and fail at once, quietly."""
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE  # read from the environment at import: patch the constant
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    if not saved and not _hub_reachable():
        constants.HF_HUB_OFFLINE = True
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)
        constants.HF_HUB_OFFLINE = saved


def load_pretrained_timm(resolved: str, num_classes: int, in_chans: int, drop_rate: float) -> nn.Module:
    """A timm model with ImageNet weights and a fresh ``num_classes`` classifier."""
    import timm

    from cnnlab.models.lite0_offline import LITE0_TIMM_NAME, load_lite0_imagenet

    if resolved.split(".")[0] == LITE0_TIMM_NAME:  # built in: no network needed
        model: Any = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=1000, drop_rate=drop_rate)
        load_lite0_imagenet(model)
        model.reset_classifier(num_classes)
        return model
    try:
        with _hub_mode():
            return timm.create_model(
                resolved, pretrained=True, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate
            )
    except Exception as exc:  # noqa: BLE001  hub errors vary (offline, 404, gated): all mean "no weights"
        raise CnnlabError(
            f"could not get ImageNet weights for '{resolved}' ({type(exc).__name__}; offline?); "
            "pass a local file with --weights FILE, or use --model efficientnet_lite0 whose "
            "weights are built in"
        ) from None


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads tensors from .safetensors or a .pt/.pth/.ckpt state dict, without unpickling code."""
    if not path.is_file():
        raise CnnlabError(f"weights file '{path}' not found; check the --weights path")
    state: Any  # a state dict, a Lightning checkpoint, or whatever else the file holds
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CnnlabError(
            f"'{path}' holds pickled Python objects, which could run code; cnnlab loads plain "
            "tensors only: save it with torch.save(model.state_dict(), ...) or as .safetensors"
        ) from None
    except Exception as exc:  # noqa: BLE001  truncated or not a weights file at all
        raise CnnlabError(f"'{path}' is not a readable weights file ({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # a Lightning checkpoint
        state = {k.removeprefix("model."): v for k, v in state["state_dict"].items()}
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(f"'{path}' is not a state dict (a mapping of names to tensors)")
    return state


def _classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Key prefixes of the final classifier, the part that may differ in size."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier")
    if names:
        return tuple(names) if isinstance(names, (list, tuple)) else (names,)
    last_linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return (last_linear[-1],) if last_linear else ()


def _under(key: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of the modules named by ``prefixes`` (whole name parts only)."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def state_mismatch(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], optional: tuple[str, ...] = ()
) -> tuple[list[str], list[str], list[str]]:
    """(missing, unexpected, differently shaped) keys of ``state`` against a model's ``own`` state;
    keys under the ``optional`` prefixes may be missing. Named here to say why loading fails."""
    missing = [k for k in own if k not in state and not _under(k, optional)]
    unexpected = [k for k in state if k not in own]
    resized = [k for k in state if k in own and own[k].shape != state[k].shape]
    return missing, unexpected, resized


def _fit_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Loads ``state`` into ``model``, dropping (and reporting) classifier keys that do not fit."""
    own = model.state_dict()
    heads = _classifier_prefixes(model)
    # A classifier of another size, another head design, or none at all (a backbone with
    # num_classes=0): none of it can be used, and the model's own head starts fresh.
    dropped = [k for k in state if _under(k, heads) and (k not in own or own[k].shape != state[k].shape)]
    for key in dropped:
        del state[key]
    missing, unexpected, resized = state_mismatch(own, state, heads)
    if missing or unexpected or resized:
        example = (missing or unexpected or resized)[0]
        raise CnnlabError(
            f"'{path}' does not fit this model: {len(missing)} missing, {len(unexpected)} "
            f"unexpected, {len(resized)} differently shaped keys (e.g. '{example}'); "
            "is it for another architecture?"
        )
    model.load_state_dict(state, strict=False)
    if dropped:
        log.warning(
            "%s: classifier of another size or design not used (%s); it starts fresh",
            path.name,
            ", ".join(dropped[:4]) + (" ..." if len(dropped) > 4 else ""),
        )


def load_local_weights(model: nn.Module, path_text: str) -> None:
    """Loads a local state dict; a classifier of another size is dropped and reported.

    Works across head designs: a plain timm file (``conv_stem...``, ``classifier...``) loads into a
    custom-head model's backbone, and a custom-head file (``backbone...``, ``head...``) into a
    plain timm model; in both cases the file's classifier is not used.

    Raises:
        CnnlabError: for any other mismatch, naming how many keys and one example.
    """
    path = Path(path_text).expanduser()
    state = read_state_dict(path)
    from_headed = any(k.startswith("backbone.") for k in state)
    if isinstance(model, HeadedModel) and not from_headed:
        _fit_state(model.backbone, state, path)
    elif from_headed and not isinstance(model, HeadedModel):
        head_keys = [k for k in state if not k.startswith("backbone.")]
        if head_keys:
            log.warning("%s: head of another design not used (%s); it starts fresh", path.name, head_keys[0])
        _fit_state(model, {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, path)
    else:
        _fit_state(model, state, path)
