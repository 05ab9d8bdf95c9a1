"""What a stage trains on: images, the backbone's cached features, or the frozen layers' cached output.

Each source gives the stage its LightningModule and LightningDataModule (Lightning's module / data
split), so fitting a stage does not care which one it has:

* :class:`Images`: the whole model (or a command's own module) on the image loader;
* :class:`CachedFeatures`: a frozen stage's head on the backbone's features, computed once
  (``cnnlab.training.feature_cache``);
* :class:`CutActivations`: the fine-tuning stage's top on the frozen bottom's output, computed once
  (``cnnlab.training.activation_cache``).

:func:`choose_stage_data` picks one for a stage. Building a cached source computes its cache; a
Ctrl-C then says what was running (``cnnlab.training.interrupts``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import lightning as L
import torch

from cnnlab.augment.batch import build_batch_augment
from cnnlab.config import RunConfig
from cnnlab.data.loaders import ByPosition, ImageDataModule
from cnnlab.data.types import PreparedData
from cnnlab.models.heads import head_forward, splits_into_features_and_head
from cnnlab.training.activation_cache import ActivationCache, top_accuracy
from cnnlab.training.feature_cache import FeatureDataModule, FeatureHeadModule, FeatureSet, cache_features
from cnnlab.training.hooks import TrainingHooks
from cnnlab.training.interrupts import preparing
from cnnlab.training.module import ClassifierModule
from cnnlab.training.stage_plan import Stage, use_feature_cache

AUGMENTED_VIEWS = 5  # augmented copies of the training set cached for a frozen stage


@dataclass(frozen=True)
class Batches:
    """How a stage's data module serves its batches."""

    size: int  # per process
    seed: int
    balanced: bool  # --sampler balanced
    by_position: ByPosition | None = None  # --flip-mode alternate: the loader mirrors the images


class StageData(Protocol):
    """A stage's source of batches: builds the stage's module and data module."""

    @property
    def feature_cache(self) -> bool:
        """The head trains on cached backbone features (run.json's ``feature_cache``)."""
        ...

    @property
    def cut_where(self) -> str | None:
        """Where the cached activations are cut (run.json's ``activation_cache``); None: no cut."""
        ...

    @property
    def features(self) -> dict[str, FeatureSet] | None:
        """A frozen stage's cached features, once built (a refit reuses them)."""
        ...

    def how(self) -> str:
        """What the stage's start line adds ("" for images)."""
        ...

    def build(self, module_kwargs: dict[str, Any], batches: Batches) -> tuple[ClassifierModule, L.LightningDataModule]:
        """The stage's LightningModule and LightningDataModule (computing a cache first if it has one)."""
        ...

    def test_accuracy(self) -> Callable[[], float] | None:
        """The test accuracy of the model as it is now, from the cache (None: score the images)."""
        ...


@dataclass
class Images:
    """The model (or a command's own module, ``hooks.module_factory``) trained on the images."""

    data: PreparedData
    hooks: TrainingHooks
    feature_cache: ClassVar[bool] = False
    cut_where: ClassVar[str | None] = None
    features: ClassVar[dict[str, FeatureSet] | None] = None

    def how(self) -> str:
        return ""

    def build(self, module_kwargs: dict[str, Any], batches: Batches) -> tuple[ClassifierModule, L.LightningDataModule]:
        module = self.hooks.module_factory(**module_kwargs)
        data = ImageDataModule(
            self.data, batches.size, batches.seed, batches.balanced, self.hooks.train_extra, batches.by_position
        )
        return module, data

    def test_accuracy(self) -> Callable[[], float] | None:
        return None


def _feature_device(config: RunConfig) -> str:
    """Where to run the one feature-extraction pass: the training accelerator when there is one."""
    wanted = config.train.accelerator
    if torch.cuda.is_available() and wanted in ("auto", "cuda", "gpu"):
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available() and wanted in ("auto", "mps"):
        return "mps"
    return "cpu"


def stage_features(
    config: RunConfig, model: torch.nn.Module, data: Any, normalize: Any, ranks: Any, listener: Any = None
) -> dict[str, FeatureSet]:
    """A frozen stage's cached features: every split once, the training images in augmented views.

    Drawn from torch's random stream as it stands (a stage seeds it first), so the same seed gives the same views.
    """
    augment = build_batch_augment(config.augment, crop=normalize.crop)
    return cache_features(
        model,
        data,
        normalize,
        augment=augment,
        train_views=AUGMENTED_VIEWS if augment is not None else 1,
        device=ranks.device if ranks.several else _feature_device(config),
        listener=listener,
        ranks=ranks,
    )


@dataclass
class CachedFeatures:
    """A frozen stage's head trained on the backbone's features, extracted once (unless given ``features``).

    ``catch``: the fine-tuning stage's cut, whose activations this one extraction pass catches on the way;
    ``listener``: told the extraction's progress (the time budget's watch).
    """

    config: RunConfig
    model: torch.nn.Module
    data: PreparedData
    ranks: Any
    features: dict[str, FeatureSet] | None = None
    catch: ActivationCache | None = None
    listener: Any = None
    feature_cache: ClassVar[bool] = True
    cut_where: ClassVar[str | None] = None

    def how(self) -> str:
        return " (backbone features computed once, then cached)"

    def build(self, module_kwargs: dict[str, Any], batches: Batches) -> tuple[ClassifierModule, L.LightningDataModule]:
        catching = self.catch.catching(self.data) if self.catch is not None else contextlib.nullcontext()
        with catching, preparing("feature extraction"):
            self.features = self.features or stage_features(
                self.config, self.model, self.data, module_kwargs["normalize"], self.ranks, self.listener
            )
        # The budget bounds the extraction, not the head: its epochs on cached features cost
        # milliseconds, and a slow extraction (a busy machine) must not leave it one epoch.
        head_kwargs = {**module_kwargs, "train_cfg": dataclasses.replace(module_kwargs["train_cfg"], time_budget=None)}
        module = FeatureHeadModule(
            model=self.model,
            num_classes=self.data.num_classes,
            **{k: v for k, v in head_kwargs.items() if k not in ("model", "num_classes")},
        )
        return module, FeatureDataModule(self.features, batches.size, batches.seed, batches.balanced)

    def test_accuracy(self) -> Callable[[], float] | None:
        assert self.features is not None, "built first"
        model, test = self.model, self.features["test"]
        return lambda: top_accuracy(lambda f: head_forward(model, f), model, test.features, test.labels)


@dataclass
class CutActivations:
    """The fine-tuning stage's top trained on the frozen bottom's output, computed once (or caught in stage 1)."""

    cache: ActivationCache
    data: PreparedData
    feature_cache: ClassVar[bool] = False
    features: ClassVar[dict[str, FeatureSet] | None] = None

    @property
    def cut_where(self) -> str:
        return self.cache.cut.where

    def how(self) -> str:
        return f" (on the frozen layers' output below {self.cut_where}, computed once: each epoch runs only the top)"

    def build(self, module_kwargs: dict[str, Any], batches: Batches) -> tuple[ClassifierModule, L.LightningDataModule]:
        with preparing("the caching of the frozen layers' output"):
            return self.cache.training(module_kwargs, self.data, batches.size, batches.seed, batches.balanced)

    def test_accuracy(self) -> Callable[[], float] | None:
        return lambda: self.cache.test_accuracy(self.data.splits["test"].labels)


def choose_stage_data(
    ctx: Any,
    stage: Stage,
    activation_cache: ActivationCache | None,
    listener: Any = None,
    features: dict[str, FeatureSet] | None = None,
) -> StageData:
    """What ``stage`` trains on: cached features for a frozen head (when the model splits into backbone
    and head, and no command brings its own module), the cut's activations for the stage the cut is
    planned for, images otherwise. Decided after the stage has set what trains."""
    hooks: TrainingHooks = ctx.hooks
    if use_feature_cache(stage, ctx.config) and splits_into_features_and_head(ctx.model) and not hooks.custom:
        catch = activation_cache if activation_cache is not None and activation_cache.stage != stage else None
        return CachedFeatures(ctx.config, ctx.model, ctx.data, ctx.ranks, features, catch, listener)
    if activation_cache is not None and activation_cache.stage == stage:
        return CutActivations(activation_cache, ctx.data)
    return Images(ctx.data, hooks)
