"""Batched inference over uint8 images: the one loop every scorer, predictor and extractor uses.

It scales pixels as the model was trained (``Normalize``), matches the model's memory layout,
sizes batches for the device (``eval_batch_size``), and runs in eval mode under
``inference_mode``, restoring every module's own mode afterwards (frozen BatchNorm stays in eval).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn

from cnnlab.data.batch_size import eval_batch_size
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import LazyImages
from cnnlab.models.outputs import as_class_logits
from cnnlab.threads import for_command, new_phase, tick

Forward = Callable[[nn.Module, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor], torch.Tensor]  # float [0, 1] (N, C, H, W) -> same


def class_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The default forward: (N, classes) logits, a one-output sigmoid head as two classes."""
    return as_class_logits(model(x))


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def is_channels_last(model: nn.Module) -> bool:
    """Whether the model was converted to channels_last (then its input should match)."""
    weight = next((p for p in model.parameters() if p.ndim == 4 and p.shape[-1] > 1), None)
    return weight is not None and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def modes_kept(model: nn.Module) -> Iterator[None]:
    """Afterwards every module's own train/eval mode back, whatever happened inside.

    ``model.train(was_training)`` would not do: it sets every submodule alike and so puts a frozen
    BatchNorm, kept in eval mode on purpose, back into training mode.
    """
    modes = [(module, module.training) for module in model.modules()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; afterwards every module's own mode back (frozen BN stays in eval)."""
    with modes_kept(model):
        model.eval()
        yield


def run_batches(
    model: nn.Module,
    images: torch.Tensor | LazyImages,
    normalize: Normalize,
    forward: Forward = class_logits,
    batch_size: int | None = None,
    augment: Augment | None = None,
    autocast: torch.dtype | None = None,
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields ``(start, forward(model, batch))`` for uint8 (N, C, H, W) ``images``, output on the CPU in float.

    ``images`` may be a stored split's ``ImageSet.for_pass``: each batch is then read from disk.

    Args:
        forward: what to compute from a normalised batch (default: class logits).
        batch_size: default: by pixels on a CPU, large on accelerators (``eval_batch_size``).
        augment: applied to [0, 1] images before normalising (e.g. augmented views of a set).
        autocast: run the forward under autocast to this dtype (a run trained and validated in
            bf16-mixed is scored in bf16 too: 1.9x faster on a CPU with AVX512-BF16).
    """
    device = model_device(model)
    normalize = normalize.to(device)
    size = batch_size or eval_batch_size(images.shape, device)
    # NHWC input for an NHWC model: about 2x faster for depthwise convs on CPU (measured, Lite0).
    layout = torch.channels_last if is_channels_last(model) else torch.contiguous_format
    mixed = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    if device.type == "cpu":
        for_command()  # the first scoring of a command looks at the machine; later ones keep the count
    new_phase()
    with eval_mode(model), torch.inference_mode(), mixed:
        for start in range(0, len(images), size):
            began = time.perf_counter()
            unit = Normalize.to_unit(images[start : start + size].to(device, non_blocking=True))
            if augment is not None:
                unit = augment(unit)
            x = normalize(unit).contiguous(memory_format=layout)
            out = forward(model, x).float().cpu()
            tick(len(out), time.perf_counter() - began)  # the thread watch follows the machine's load
            yield start, out


def predict_probs(
    model: nn.Module, images: torch.Tensor | LazyImages, normalize: Normalize, autocast: torch.dtype | None = None
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yields ``(start, softmax probabilities)`` per batch: memory stays flat whatever N is."""
    for start, logits in run_batches(model, images, normalize, autocast=autocast):
        yield start, torch.softmax(logits, dim=1)


def accuracy(
    model: nn.Module,
    images: torch.Tensor | LazyImages,
    labels: torch.Tensor,
    normalize: Normalize,
    autocast: torch.dtype | None = None,
) -> float:
    """Top-1 accuracy on uint8 images."""
    correct = 0
    for start, logits in run_batches(model, images, normalize, autocast=autocast):
        correct += int((logits.argmax(1) == labels[start : start + len(logits)]).sum())
    return correct / max(1, len(labels))
