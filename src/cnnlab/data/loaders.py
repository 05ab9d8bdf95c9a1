"""Batches straight from uint8 tensors (or a record store on disk): one index operation per batch, no collate."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeAlias

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cnnlab.data.batch_size import EVAL_BATCH_SIZE, eval_batch_size  # noqa: F401  EVAL_BATCH_SIZE: imported from here too
from cnnlab.data.pack_read import streamable
from cnnlab.data.types import ImageSet, PreparedData
from cnnlab.errors import CnnlabError

# A training batch's transform that depends on which images it holds and the epoch:
# (uint8 images, their positions in the split, epoch) -> images (e.g. augment.flip.AlternatingFlip).
ByPosition: TypeAlias = Callable[[torch.Tensor, np.ndarray, int], torch.Tensor]


class _BatchIndexed(Dataset):
    """Indexed by a whole list of positions, returning the stacked batch (images, labels).

    With ``extra`` (one row per image, e.g. a teacher's logits), batches are (images, labels, extra).
    ``by_position``: applied to each batch's images with their positions and ``epoch_of()``.
    """

    def __init__(
        self,
        image_set: ImageSet,
        extra: torch.Tensor | None = None,
        by_position: ByPosition | None = None,
        epoch_of: Callable[[], int] = lambda: 0,
    ) -> None:
        self._set, self._labels = image_set, image_set.labels.numpy()
        self._extra = extra.numpy() if extra is not None else None
        self._by_position, self._epoch_of = by_position, epoch_of

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, positions: list[int]) -> tuple[torch.Tensor, ...]:
        index = np.asarray(positions)
        images = self._set.take(index)
        if self._by_position is not None:
            images = self._by_position(images, index, self._epoch_of())
        batch = (images, torch.from_numpy(self._labels[index]))
        return batch if self._extra is None else (*batch, torch.from_numpy(self._extra[index]))


class EpochBatches(Sampler[list[int]]):
    """Yields lists of positions; the order depends only on (seed, epoch), so resumes replay it.

    Lightning calls ``set_epoch`` before each epoch. With ``balanced``, positions are drawn with
    replacement so that each class is seen equally often (a balanced sampler).

    With several processes (``world_size`` > 1) each rank takes every ``world_size``-th position of
    the epoch's order, from position ``rank``, in batches of ``batch_size``: step k of all ranks
    together is then exactly batch k of one process at ``batch_size * world_size``. Lightning's
    own sharding (a DistributedSampler) would split whole batches instead, multiplying the global
    batch, so the Trainer is told not to (``use_distributed_sampler=False``). Shards are padded
    with the epoch's first positions to equal length (every rank must take as many steps), unless
    ``pad`` is False (evaluation, where a repeated image would count twice and no step syncs).
    """

    def __init__(
        self,
        labels: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        balanced: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
        prefetch: Callable[[list[int]], None] | None = None,
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = len(labels), batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.pad = pad or self.size < world_size  # no rank may be left without a batch
        self.prefetch = prefetch  # called with the next batch as each batch is handed out
        self.epoch = 0
        self.weights = None
        if balanced:
            counts = torch.bincount(labels).clamp(min=1).double()
            self.weights = (1.0 / counts)[labels]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        if self.pad:
            return -(-self.size // self.world_size)
        return len(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return (self._shard_size() + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.size, replacement=True, generator=generator)
        elif self.shuffle:
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        if self.world_size > 1:
            if self.pad:
                padded = -(-self.size // self.world_size) * self.world_size
                order = order.repeat(-(-padded // max(self.size, 1)))[:padded]
            order = order[self.rank :: self.world_size]
        batches = [chunk.tolist() for chunk in order.split(self.batch_size)]
        for k, batch in enumerate(batches):
            if self.prefetch is not None and k + 1 < len(batches):
                self.prefetch(batches[k + 1])  # read from disk while this batch trains
            yield batch


def batch_loader(
    image_set: ImageSet,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    balanced: bool = False,
    shard: tuple[int, int] = (0, 1),
    extra: torch.Tensor | None = None,
    by_position: ByPosition | None = None,
) -> DataLoader:
    """A DataLoader of (uint8 images, labels[, extra rows]) batches from an in-memory split.

    ``shard``: (rank, world_size) of this process: its share of each epoch (see EpochBatches);
    training shards (``shuffle``) are padded to equal length, evaluation ones are not.
    ``extra``: rows served with each image (e.g. a teacher's logits computed once).
    ``by_position``: a transform of each batch by its images' positions and the sampler's epoch
    (which Lightning sets, on a resume too).
    """
    sampler = EpochBatches(
        image_set.labels,
        batch_size,
        shuffle,
        seed,
        balanced,
        *shard,
        pad=shuffle,
        prefetch=image_set.prefetch if image_set.stored else None,
    )
    return DataLoader(
        _BatchIndexed(image_set, extra, by_position, lambda: sampler.epoch),
        sampler=sampler,
        batch_size=None,  # the sampler already yields whole batches
        pin_memory=torch.cuda.is_available(),
    )


def trainer_shard(module: L.LightningDataModule) -> tuple[int, int]:
    """(rank, world_size) of the Trainer a data module serves; (0, 1) outside one."""
    trainer = module.trainer
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class ImageDataModule(L.LightningDataModule):
    """Serves the prepared splits to the Lightning Trainer, each process its share.

    ``batch_size`` is the batch of one process (the per-device batch); ``train_extra``: rows served
    with each training image, e.g. a teacher's logits computed once; ``train_by_position``: a
    transform of each training batch by its images' positions and the epoch (see batch_loader).
    """

    def __init__(
        self,
        data: PreparedData,
        batch_size: int,
        seed: int,
        balanced: bool = False,
        train_extra: torch.Tensor | None = None,
        train_by_position: ByPosition | None = None,
    ):
        super().__init__()
        self.data, self.batch_size, self.seed, self.balanced = data, batch_size, seed, balanced
        self.train_extra, self.train_by_position = train_extra, train_by_position
        streamed = streamable(data.splits["train"]) is not None
        if streamed and (balanced or train_extra is not None or train_by_position is not None):
            what = (
                "--sampler balanced"
                if balanced
                else "distillation (a teacher's logits per image)"
                if train_extra is not None
                else "--flip-mode alternate"
            )
            raise CnnlabError(
                f"{what} needs random access to the training images; packed data streams them: "
                f"train from the folder '{data.source}' was packed from instead"
            )

    def train_dataloader(self) -> DataLoader:
        packed = streamable(self.data.splits["train"])
        if packed is not None:  # shards of cnnlab data pack: litdata streams this rank's part
            trainer = self.trainer
            if trainer is None:
                return packed.train_loader(self.batch_size, self.seed, (0, 1))
            return packed.train_loader(
                self.batch_size,
                self.seed,
                trainer_shard(self),
                trainer.num_nodes,
                epoch_of=lambda: trainer.current_epoch,
            )
        return batch_loader(
            self.data.splits["train"],
            self.batch_size,
            True,
            self.seed,
            self.balanced,
            trainer_shard(self),
            self.train_extra,
            self.train_by_position,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def _eval_loader(self, split: str) -> DataLoader:
        image_set = self.data.splits[split]
        device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
        return batch_loader(image_set, eval_batch_size(image_set.shape, device), shard=trainer_shard(self))
