"""Stage 2 on cached activations: the frozen bottom of the backbone runs once, each epoch only the top.

Fine-tuning keeps BatchNorm in inference mode, so without augmentation the frozen bottom gives
the same output for an image every epoch. Cut where the trainable top begins
(``cnnlab.models.cut``), its output for every image is computed once, and each epoch runs only
the top: for EfficientNet-Lite0 with its last 3 blocks unfrozen, about a quarter of the
network's multiply-adds (96 of 384 million), on 37 KB of activations per 224-px image. The
activations are caught while stage 1 extracts its features (the same frozen layers compute
them), so the bottom costs no pass of its own; a run resumed in stage 2 computes them at the
stage's start.

Integration: :func:`plan_cut` (before stage 1: can stage 2 use a cut, and where) ->
:meth:`ActivationCache.catching` around stage 1's extraction -> :meth:`ActivationCache.training` at stage 2:
a ``CutTopModule`` (a ``ClassifierModule`` whose forward is the top: same loss, metrics,
optimiser, schedule and whole-model checkpoints) and cnnlab's ``FeatureDataModule`` (the image
loader's batch order). Anything that changes the bottom's output between epochs (augmentation,
mixing, BatchNorm statistics) or a model the cut cannot be verified on trains on images.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import PreparedData
from cnnlab.models.cut import Cut, cut_below_trainable
from cnnlab.models.inference import eval_mode, modes_kept, run_batches
from cnnlab.progress import Progress
from cnnlab.training.feature_cache import FeatureDataModule, FeatureHeadModule, FeatureSet
from cnnlab.training.stage_plan import Stage, apply_stage, set_trainable

log = logging.getLogger("cnnlab")

# Upper bound on the cached activations (float32, every split). Lite0 at 224 px cut at its last
# 3 blocks holds 37 KB per image: 2 GiB is about 57,000 images. Larger sets train on images.
MAX_BYTES = 2 * 2**30
SAMPLE_IMAGES = 4  # images the cut is verified on


def _no_cache_reason(stage: Stage, config: RunConfig) -> str:
    """Why ``stage`` cannot train on cached activations ("" when it can, given a cut)."""
    if not config.transfer.feature_cache:
        return "--no-feature-cache"
    if stage.prepare != "top" or not stage.bn_eval:
        return "the whole network trains"
    if config.augment.mixup > 0 or config.augment.cutmix > 0 or build_batch_augment(config.augment) is not None:
        return "augmentation changes the images every epoch"
    return ""


@dataclass
class ActivationCache:
    """Stage 2's cut and its activations per split, filled during stage 1 or at stage 2's start."""

    cut: Cut
    stage: Stage
    activations: dict[str, torch.Tensor] = field(default_factory=dict)

    @contextlib.contextmanager
    def catching(self, data: PreparedData) -> Iterator[None]:
        """While inside, every forward pass through the top's first module keeps its input.

        Wrap stage 1's one extraction pass (splits in ``data.splits`` order, no augmented views):
        afterwards the activations are split by the splits' sizes. Anything else (an interrupted
        or different pass) leaves the cache empty and stage 2 extracts them itself.
        """
        if not len(self.cut.top):
            yield
            return
        caught: list[torch.Tensor] = []
        handle = self.cut.top[0].register_forward_pre_hook(lambda _module, args: caught.append(args[0].float().cpu()))
        try:
            yield
        finally:
            handle.remove()
        sizes = [len(image_set) for image_set in data.splits.values()]
        if sum(len(batch) for batch in caught) == sum(sizes):
            everything = torch.cat(caught)  # outside inference mode: a normal tensor, fit to train on
            self.activations = dict(zip(data.splits, torch.split(everything, sizes)))

    def _extract(self, data: PreparedData, normalize: Normalize) -> None:
        splits = {name: data.splits[name] for name in ("train", "val", "test") if name not in self.activations}
        total = sum(len(image_set) for image_set in splits.values())
        with Progress(f"computing the frozen layers' output below {self.cut.where}", total) as progress:
            for name, image_set in splits.items():
                chunks = []
                for _, out in run_batches(
                    self.cut.model, image_set.for_pass, normalize, lambda _model, x: self.cut.bottom_forward(x)
                ):
                    chunks.append(out)
                    progress.advance(len(out))
                self.activations[name] = torch.cat(chunks)

    def training(
        self, module_kwargs: dict[str, Any], data: PreparedData, batch_size: int, seed: int, balanced: bool
    ) -> tuple[CutTopModule, FeatureDataModule]:
        """The stage's module and data: the top trained on the cached activations."""
        if not all(name in self.activations for name in ("train", "val", "test")):
            self._extract(data, module_kwargs["normalize"])
        sets = {name: FeatureSet(self.activations[name], data.splits[name].labels) for name in ("train", "val", "test")}
        kwargs = {k: v for k, v in module_kwargs.items() if k not in ("model", "num_classes")}
        module = CutTopModule(self.cut, num_classes=data.num_classes, **kwargs)
        return module, FeatureDataModule(sets, batch_size, seed, balanced)

    def test_accuracy(self, labels: torch.Tensor) -> float:
        """Top-1 accuracy of the model as it is now, from the cached test activations."""
        return top_accuracy(self.cut.top_forward, self.cut.model, self.activations["test"], labels)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.activations.values())


def top_accuracy(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 256,
) -> float:
    """Accuracy of ``forward`` over cached ``inputs`` in eval mode (every module's mode restored after)."""
    from cnnlab.models.outputs import as_class_logits

    correct = 0
    with eval_mode(model), torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            logits = as_class_logits(forward(inputs[start : start + batch_size]))
            correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / max(1, len(labels))


def plan_cut(
    model: nn.Module, stages: list[Stage], config: RunConfig, data: PreparedData, normalize: Normalize
) -> tuple[ActivationCache | None, str]:
    """Stage 2's verified cut, decided before any stage runs (so stage 1 can catch its activations).

    Sets the model's trainable layers as the fine-tuning stage will, verifies the cut on a few
    training images, then leaves everything trainable as it was. Returns (None, why) when stage 2
    trains on images.
    """
    stage = next((s for s in stages if s.name == "finetune"), None)
    if stage is None:
        return None, ""
    why = _no_cache_reason(stage, config)
    if why:
        return None, why
    saved = [p.requires_grad for p in model.parameters()]
    try:
        with modes_kept(model):
            apply_stage_quietly(model, stage, config)
            train = data.splits["train"]
            images = train.take(list(range(min(SAMPLE_IMAGES, len(train)))))  # a few rows, even from a disk store
            sample = normalize(Normalize.to_unit(images)).to(next(model.parameters()).device)
            cut, why = cut_below_trainable(model, sample)
    finally:
        for p, flag in zip(model.parameters(), saved):
            p.requires_grad_(flag)
    if cut is None:
        return None, why
    # In eval mode: the model is in training mode here, and one image through BatchNorm in training
    # mode moved the frozen backbone's ImageNet statistics (10% of the way to that image's), so every
    # later stage ran on altered features.
    with torch.no_grad(), eval_mode(model):
        per_image = cut.bottom_forward(sample[:1]).numel() * 4
    needed = per_image * sum(len(s) for s in data.splits.values())
    if needed > MAX_BYTES:
        return None, (
            f"its activations would take {needed / 2**30:.1f} GiB (the cache's limit is {MAX_BYTES / 2**30:.0f})"
        )
    return ActivationCache(cut, stage), ""


def apply_stage_quietly(model: nn.Module, stage: Stage, config: RunConfig) -> None:
    """``apply_stage`` without its log line: trainable layers and BatchNorm modes as ``stage`` trains."""
    set_trainable(model, stage, config.transfer)
    from cnnlab.models.freeze import set_frozen_bn_eval

    model.train()
    set_frozen_bn_eval(model, include_trainable=stage.bn_eval)


class CutTopModule(FeatureHeadModule):
    """A ClassifierModule trained on cached activations: the forward pass is the cut's top.

    Holds the whole model (checkpoints load like any ClassifierModule's); torch's thread count
    is left alone (the top is convolutions, not a tiny head).
    """

    def __init__(self, cut: Cut, num_classes: int, train_cfg: Any, **kwargs: Any) -> None:
        super().__init__(model=cut.model, num_classes=num_classes, train_cfg=train_cfg, cpu_threads=None, **kwargs)
        self.cut = cut

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        return self.cut.top_forward(activations)


__all__ = ["ActivationCache", "CutTopModule", "apply_stage", "plan_cut", "top_accuracy"]
