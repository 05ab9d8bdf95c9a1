"""Feature cache: with a frozen backbone, compute pooled features once and train only the head.

Stage 1 of transfer learning runs the frozen backbone over the same images every epoch. Its
output never changes (eval mode, frozen weights), so one pass per split is enough; after that an
epoch is a few small matrix products. Augmentation is kept as a fixed number of augmented views
of the training set, one used per epoch in turn.

Integration: ``cache_features`` -> ``FeatureDataModule`` -> ``FeatureHeadModule`` (a
``ClassifierModule`` whose forward runs only the head, so its loss, metrics, optimiser,
scheduler and checkpoints are the same, and its checkpoints hold the whole model).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from cnnlab.data.batch_size import EVAL_BATCH_SIZE
from cnnlab.data.loaders import EpochBatches, trainer_shard
from cnnlab.data.normalize import Normalize
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.models.heads import head_forward, pooled_features
from cnnlab.models.inference import Augment, model_device, run_batches
from cnnlab.progress import Listener, Progress
from cnnlab.threads import watch
from cnnlab.training.module import ClassifierModule
from cnnlab.training.ranks import SINGLE, Ranks


@dataclass
class FeatureSet:
    """Pooled features of one split: ``features`` float (views * N, D), ``labels`` int64 (views * N,).

    Rows ``v * N ... (v + 1) * N`` are view ``v`` of the N images (``views`` > 1: augmented views).
    """

    features: torch.Tensor
    labels: torch.Tensor
    views: int = 1

    def __len__(self) -> int:
        return len(self.labels) // self.views


def extract_features(
    model: nn.Module,
    images: ImageSet | torch.Tensor,
    normalize: Normalize,
    batch_size: int | None = None,
    augment: Augment | None = None,
    views: int = 1,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
) -> FeatureSet:
    """Runs the (frozen) backbone once over ``images`` (uint8 N, C, H, W) in eval mode.

    Args:
        augment: applied to [0, 1] images before normalising; with ``views`` > 1 each view is
            a fresh draw (the augmentation uses torch's global RNG: seed before calling).
        device: where to compute, e.g. "cuda" while the model still sits on the CPU before
            ``trainer.fit``: the model (and an ``nn.Module`` augment) is moved there for the
            pass and back afterwards. Default: the model's device. Features end on the CPU.
        progress: advanced by each batch's images.
    """
    tensor = images.for_pass if isinstance(images, ImageSet) else images
    labels = images.labels if isinstance(images, ImageSet) else torch.zeros(len(tensor), dtype=torch.long)
    home = model_device(model)
    device = torch.device(device) if device is not None else home
    chunks: list[torch.Tensor] = []
    model.to(device)
    if isinstance(augment, nn.Module):
        augment.to(device)
    try:
        for _ in range(views):
            for _, out in run_batches(model, tensor, normalize, pooled_features, batch_size, augment):
                chunks.append(out)
                if progress is not None:
                    progress.advance(len(out))
    finally:
        model.to(home)  # in place: the parameters (and an optimizer holding them) stay the same objects
    # Concatenated outside inference mode: a normal tensor, usable in autograd later.
    features = torch.cat(chunks) if chunks else torch.zeros(0, 0)
    return FeatureSet(features, labels.repeat(views), views)


def cache_features(
    model: nn.Module,
    data: PreparedData,
    normalize: Normalize,
    batch_size: int | None = None,
    augment: Augment | None = None,
    train_views: int = 1,
    device: torch.device | str | None = None,
    listener: Listener | None = None,
    ranks: Ranks = SINGLE,
) -> dict[str, FeatureSet]:
    """Features of every split; the training split as ``train_views`` augmented views when
    ``augment`` is given (validation and test are never augmented).

    With several processes (``ranks``) each extracts its share of every split and all of them
    then hold all the features. Shows progress (this pass takes minutes for thousands of photos
    on a CPU); ``listener`` hears each batch (done, total, seconds), e.g. to see early that a time
    budget cannot be met.
    """
    views = {name: max(1, train_views) if name == "train" and augment is not None else 1 for name in data.splits}
    # A split smaller than the number of processes is extracted whole by each: a share must not be empty.
    sharded = {name: ranks.several and len(image_set) >= ranks.world_size for name, image_set in data.splits.items()}
    shares = {
        name: image_set.subset(ranks.shard(len(image_set)).numpy()) if sharded[name] else image_set
        for name, image_set in data.splits.items()
    }
    total = sum(len(shares[name]) * views[name] for name in data.splits)
    what = f" (this process's share, 1 of {ranks.world_size})" if ranks.several else ""
    result = {}
    with Progress(f"extracting backbone features{what}", total, listener=listener) as progress:
        for name, image_set in data.splits.items():
            part = extract_features(
                model,
                shares[name],
                normalize,
                batch_size,
                augment=augment if name == "train" else None,
                views=views[name],
                device=device,
                progress=progress,
            )
            result[name] = _gathered(part, image_set.labels, ranks) if sharded[name] else part
    return result


def _gathered(part: FeatureSet, labels: torch.Tensor, ranks: Ranks) -> FeatureSet:
    """Every rank's share of one split's features put together, views kept in their row blocks."""
    views, count = part.views, len(part)
    rows = part.features.reshape(views, count, -1).transpose(0, 1)  # (images, views, D): rows to gather
    whole = ranks.gather_rows(rows.contiguous(), len(labels)).transpose(0, 1).reshape(views * len(labels), -1)
    return FeatureSet(whole.contiguous(), labels.repeat(views), views)


class _Rows(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Indexed by a whole list of row positions, returning the stacked batch."""

    def __init__(self, features: FeatureSet) -> None:
        self.features, self.labels = features.features, features.labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(positions, dtype=torch.long)
        return self.features[index], self.labels[index]


class _ViewBatches(EpochBatches):
    """The image loader's batch order (same seed -> same batches), on view ``epoch % views``."""

    def __init__(
        self, features: FeatureSet, batch_size: int, shuffle: bool, seed: int, balanced: bool, shard: tuple[int, int]
    ) -> None:
        super().__init__(features.labels[: len(features)], batch_size, shuffle, seed, balanced, *shard, pad=shuffle)
        self.views = features.views

    def __iter__(self) -> Iterator[list[int]]:
        offset = (self.epoch % self.views) * self.size
        for positions in super().__iter__():
            yield [offset + p for p in positions]


def feature_loader(
    features: FeatureSet,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    balanced: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> DataLoader[Any]:
    """A DataLoader of (features, labels) batches, like ``cnnlab.data.loaders.batch_loader``."""
    sampler = _ViewBatches(features, batch_size, shuffle, seed, balanced, shard)
    return DataLoader(_Rows(features), sampler=sampler, batch_size=None)


class FeatureDataModule(L.LightningDataModule):
    """Serves cached features in place of ``ImageDataModule`` (same batch order and sizes, each
    process its share)."""

    def __init__(self, features: dict[str, FeatureSet], batch_size: int, seed: int, balanced: bool = False):
        super().__init__()
        self.features, self.batch_size, self.seed, self.balanced = features, batch_size, seed, balanced

    def train_dataloader(self) -> DataLoader[Any]:
        return feature_loader(
            self.features["train"], self.batch_size, True, self.seed, self.balanced, trainer_shard(self)
        )

    def val_dataloader(self) -> DataLoader[Any]:
        return feature_loader(self.features["val"], max(self.batch_size, EVAL_BATCH_SIZE), shard=trainer_shard(self))

    def test_dataloader(self) -> DataLoader[Any]:
        return feature_loader(self.features["test"], max(self.batch_size, EVAL_BATCH_SIZE), shard=trainer_shard(self))


class FeatureHeadModule(ClassifierModule):
    """A ClassifierModule trained on cached features: the forward pass is the head alone.

    Holds the whole model (so checkpoints load like any ClassifierModule's), but only the head
    runs, and only trainable parameters (the head, after ``freeze_backbone``) are optimised.
    Batches are features already: no pixel scaling, augmentation or mixing.

    ``cpu_threads`` (default 1) is torch's thread count while fitting on the CPU, restored after:
    the head's matrices are tiny, and on a busy machine two spinning OpenMP threads made an epoch
    of 2,000 features 40x slower than one thread (2.6 s vs 0.064 s, 2 shared cores). None: leave it.
    """

    def __init__(
        self, model: nn.Module, num_classes: int, train_cfg: Any, cpu_threads: int | None = 1, **kwargs: Any
    ) -> None:
        kwargs.pop("augment", None)
        kwargs.pop("mix", None)
        kwargs.pop("normalize", None)
        super().__init__(
            model=model,
            num_classes=num_classes,
            normalize=Normalize([0.0], [1.0]),
            train_cfg=train_cfg,
            augment=None,
            mix=None,
            **kwargs,
        )
        self.cpu_threads = cpu_threads
        self._saved_threads: int | None = None

    def on_fit_start(self) -> None:
        if self.cpu_threads is not None and self.device.type == "cpu":
            self._saved_threads = torch.get_num_threads()
            watching = watch()
            if watching is not None:  # the thread watch leaves the head's count alone until the fit ends
                watching.hold(self.cpu_threads)
            else:
                torch.set_num_threads(self.cpu_threads)

    def on_fit_end(self) -> None:
        if self._saved_threads is not None:
            watching = watch()
            if watching is not None and watching.held:
                watching.release()
            else:
                torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return head_forward(self.model, features)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        return batch  # features: nothing to convert
