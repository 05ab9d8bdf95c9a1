"""Grad-CAM, Grad-CAM++ and EigenCAM heat maps through the ``grad-cam`` package (pytorch-grad-cam).

The package computes the maps; this module steers it around the traps users report with it:

* frozen weights (a stage-1 transfer run) leave the hooked activation without a gradient, and
  the package then fails: the pass instead makes the *input* require a gradient and turns every
  weight's ``requires_grad`` off, so gradients reach the layer through the input and no weight
  ``.grad`` is written; each flag is restored afterwards.
* a layer whose output a later in-place operation changes is refused (:func:`layers.find_layer`)
  and the defaults are whole blocks, so saved activations are the values the network used.
* ``torch.compile`` ignores hooks: the eager module is used (:func:`layers.eager`).
* a CAM object holds hooks until released: one object serves every image of a command and its
  hooks are removed in ``finally`` (not by its ``__exit__``, which swallows IndexErrors).
* it puts the model in eval mode for good: every module's own mode is restored afterwards.
* it clips the raw map at 0 and scales it to its own peak, so a class with no positive evidence
  anywhere gives an all-zero (all-blue) map that looks like any other: the raw peak is kept
  (``Heatmaps.peak``) and such a map is said to show no evidence.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cnnlab.data.normalize import Normalize
from cnnlab.explain.layers import eager
from cnnlab.explain.settings import CAM_METHODS
from cnnlab.models.inference import eval_mode, is_channels_last, model_device
from cnnlab.models.outputs import as_class_logits

METHODS = CAM_METHODS  # declared with --method in explain/settings.py
BATCH = 16  # images per forward/backward pass: bounded memory for any number of images


@dataclass(frozen=True)
class Heatmaps:
    """Heat maps of a batch: ``heat`` (N, H, W) in [0, 1] at the input size, the class each explains."""

    heat: np.ndarray
    probs: torch.Tensor  # (N, classes) softmax of the forward pass that made the maps
    target: list[int]
    peak: np.ndarray  # (N,) each raw map's maximum before clipping and scaling; NaN for EigenCAM (no class)

    def no_evidence(self, i: int) -> bool:
        """True when nothing in image ``i`` raised its class's score: the map is flat, not "look here"."""
        return bool(self.peak[i] <= 0)  # NaN (EigenCAM) compares False


def no_evidence_text(class_name: str) -> str:
    """What a flat map means, said the same way on the console and on the serving page."""
    return (
        f"no evidence for '{class_name}' in this photo: nothing in it raised the class's score, so its "
        "Grad-CAM map is flat (all blue), not a place to look"
    )


def _keep_raw_peaks(cam: Any, peaks: list[float]) -> None:
    """Makes ``cam`` append each raw map's maximum to ``peaks`` before the package clips and scales it."""
    raw = cam.get_cam_image

    def recorded(*args: object, **kwargs: object) -> np.ndarray:
        maps = np.asarray(raw(*args, **kwargs))
        peaks.extend(maps.reshape(len(maps), -1).max(axis=1).astype(float).tolist())
        return maps

    cam.get_cam_image = recorded  # an instance attribute: this CAM object only


class _ClassLogits(nn.Module):
    """The model with (N, classes) logits, so a one-logit sigmoid head reads as two classes."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return as_class_logits(self.model(x))


def _cam_class(method: str) -> type:
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}[method]


class Explain(Protocol):
    """``explain(uint8 images, classes or None) -> Heatmaps``: the function a cam_session yields."""

    def __call__(self, images: torch.Tensor, classes: list[int] | None = None) -> Heatmaps: ...


@contextlib.contextmanager
def cam_session(model: nn.Module, layer: str, normalize: Normalize, method: str = "gradcam") -> Iterator[Explain]:
    """Yields ``explain(uint8 images, classes or None) -> Heatmaps`` for ``layer`` of ``model``.

    ``classes`` None explains each image's predicted class. The model, its modes and its
    ``requires_grad`` flags are as before once the block ends.
    """
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with eager(model) as net, eval_mode(net):
        flags = [(p, p.requires_grad) for p in net.parameters()]
        cam = None
        try:
            for p, _ in flags:
                p.requires_grad_(False)
            cam = _cam_class(method)(model=_ClassLogits(net), target_layers=[net.get_submodule(layer)])
            cam.compute_input_gradient = True  # gradients flow through the input, whatever is frozen
            peaks: list[float] = []
            if method != "eigencam":  # EigenCAM's map is a projection whose sign means nothing
                _keep_raw_peaks(cam, peaks)
            device, scale = model_device(net), normalize.to(model_device(net))
            layout = torch.channels_last if is_channels_last(net) else torch.contiguous_format

            def explain(images: torch.Tensor, classes: list[int] | None = None) -> Heatmaps:
                heats: list[np.ndarray] = []
                peaks.clear()
                probs: list[torch.Tensor] = []
                targets: list[int] = []
                for start in range(0, len(images), BATCH):
                    x = scale(Normalize.to_unit(images[start : start + BATCH].to(device)))
                    x = x.contiguous(memory_format=layout)
                    wanted = None if classes is None else classes[start : start + BATCH]
                    with torch.inference_mode(False), torch.enable_grad():
                        heat = cam(
                            input_tensor=x,
                            targets=None if wanted is None else [ClassifierOutputTarget(int(c)) for c in wanted],
                        )
                        batch_probs = torch.softmax(cam.outputs.detach().float().cpu(), dim=1)
                    cam.activations_and_grads.clear()  # no graph or activations kept between batches
                    heats.append(np.nan_to_num(np.asarray(heat, dtype=np.float32)))
                    probs.append(batch_probs)
                    targets += wanted if wanted is not None else batch_probs.argmax(1).tolist()
                peak = np.asarray(peaks, dtype=float) if peaks else np.full(len(targets), np.nan)
                return Heatmaps(np.concatenate(heats), torch.cat(probs), [int(t) for t in targets], peak)

            yield explain
        finally:
            if cam is not None:
                cam.activations_and_grads.release()
            for p, flag in flags:
                p.requires_grad_(flag)
