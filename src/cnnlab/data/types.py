"""Image sets: one uint8 tensor per split (or rows of a store on disk), so a batch costs one index operation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from cnnlab.config.sections import CropMode


class RecordSource(Protocol):
    """Images kept outside memory (cnnlab.data.split_records.RecordFile): a shape and reads by row."""

    shape: tuple[int, int, int, int]

    def __len__(self) -> int: ...

    def read(self, rows: np.ndarray) -> np.ndarray: ...

    def prefetch(self, rows: np.ndarray) -> None: ...


class LazyImages:
    """A stored split's images as a batched pass reads them (``len``, ``shape``, slices), each slice read on demand."""

    def __init__(self, image_set: ImageSet) -> None:
        self._set, self.shape = image_set, image_set.shape

    def __len__(self) -> int:
        return len(self._set)

    def __getitem__(self, key: slice) -> torch.Tensor:
        return self._set.take(np.arange(len(self._set))[key])


class ImageSet:
    """One split: uint8 (N, C, H, W) images, int64 ``labels`` (N,), and where each came from.

    The images are an in-memory tensor, or ``rows`` of a record store on disk (``stored``): then
    a subset only records which rows, each batch is read when it is needed (``take``), and
    nothing holds the whole split in memory.
    """

    def __init__(
        self, images: torch.Tensor | RecordSource, labels: torch.Tensor, ids: list[str], rows: np.ndarray | None = None
    ) -> None:
        if isinstance(images, torch.Tensor):
            assert images.dtype == torch.uint8 and images.ndim == 4, images.shape
            assert rows is None, "rows are for stored images"
        self.source = images
        self.rows = None if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = labels
        self.ids = ids  # file path (folders) or "<set>:<index>" (built-in sets); fingerprints the split
        assert len(self.labels) == len(self.ids) == (len(images) if self.rows is None else len(self.rows))

    @property
    def stored(self) -> bool:
        """True when the images are read from a record store on demand."""
        return not isinstance(self.source, torch.Tensor)

    @property
    def images(self) -> torch.Tensor:
        """All the split's images as one tensor: read whole for a stored split (``take`` reads a few)."""
        return self.source if isinstance(self.source, torch.Tensor) else self.take(np.arange(len(self)))

    @images.setter
    def images(self, value: torch.Tensor) -> None:
        self.source, self.rows = value, None

    @property
    def for_pass(self) -> torch.Tensor | LazyImages:
        """The images for one batched pass (run_batches): the tensor, or slices read from the store."""
        return self.source if isinstance(self.source, torch.Tensor) else LazyImages(self)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) of the split, without reading any image."""
        _, channels, height, width = self.source.shape
        return len(self), int(channels), int(height), int(width)

    def take(self, positions: np.ndarray | torch.Tensor | list[int]) -> torch.Tensor:
        """The images at ``positions`` (of this split) as a new tensor."""
        index = np.asarray(positions, dtype=np.int64)
        if isinstance(self.source, torch.Tensor):
            # NumPy fancy indexing: torch's multi-threaded gather was 60x slower for small uint8
            # batches on a busy 2-core machine (12 ms vs 0.2 ms per 128 CIFAR images, measured).
            return torch.from_numpy(self.source.numpy()[index])
        rows = self.rows[index] if self.rows is not None else index
        return torch.from_numpy(self.source.read(rows))

    def prefetch(self, positions: list[int]) -> None:
        """Starts reading the images at ``positions`` from disk ahead of ``take`` (nothing for memory)."""
        if not isinstance(self.source, torch.Tensor):
            index = np.asarray(positions, dtype=np.int64)
            self.source.prefetch(self.rows[index] if self.rows is not None else index)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: np.ndarray) -> ImageSet:
        """The images at ``positions``, in that order (for a stored split: the same store, other rows)."""
        index = torch.as_tensor(positions, dtype=torch.long)
        labels, ids = self.labels[index], [self.ids[i] for i in positions]
        if isinstance(self.source, torch.Tensor):
            return ImageSet(self.source[index], labels, ids)
        rows = np.asarray(positions, dtype=np.int64)
        return ImageSet(self.source, labels, ids, rows=self.rows[rows] if self.rows is not None else rows)

    def class_counts(self, num_classes: int) -> list[int]:
        """Images per class, in class-index order."""
        return torch.bincount(self.labels, minlength=num_classes).tolist()

    def fingerprint(self) -> str:
        """Short hash of the split's members, to check a re-derived split is the same one."""
        digest = hashlib.sha256("\n".join(self.ids).encode("utf-8"))
        digest.update(self.labels.numpy().tobytes())
        return digest.hexdigest()[:16]


@dataclass
class SkippedFile:
    """An input file that could not be used, and why."""

    path: str
    reason: str


@dataclass
class PreparedData:
    """Everything the rest of cnnlab needs from the data: splits, classes, channels, size."""

    splits: dict[str, ImageSet]  # "train", "val", "test"
    class_names: list[str]
    source: str
    skipped: list[SkippedFile] = field(default_factory=list)
    crop_pct: float = 1.0  # images are stored larger than the model's input (cnnlab.data.crop) when < 1
    crop: int | None = None  # then the model's input side, cut from each stored image
    held_out: tuple[str, ...] = ()  # the splits cnnlab held out of the training images (seeded), not given
    crop_mode: CropMode = "center"  # how each photo became its stored square (--crop-mode, data.decode.Fit)

    @property
    def channels(self) -> int:
        return self.splits["train"].shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.splits["train"].shape[2], self.splits["train"].shape[3]

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the model's input: the crop of the stored images, or all of them."""
        return (self.crop, self.crop) if self.crop is not None else self.image_size

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        """Counts per split and class, as stored in ``run.json``."""
        splits = {}
        for name, image_set in self.splits.items():
            counts = image_set.class_counts(self.num_classes)
            splits[name] = {
                "count": len(image_set),
                "per_class": dict(zip(self.class_names, counts)),
                "fingerprint": image_set.fingerprint(),
            }
        return {"source": self.source, "splits": splits, "skipped": len(self.skipped), "held_out": list(self.held_out)}
