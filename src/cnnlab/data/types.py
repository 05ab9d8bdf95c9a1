"""In-memory image sets: one uint8 tensor per split, so batching costs one index operation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class ImageSet:
    """One split: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,), and where each came from."""

    images: torch.Tensor
    labels: torch.Tensor
    ids: list[str]  # file path (folders) or "<set>:<index>" (built-in sets); fingerprints the split

    def __post_init__(self) -> None:
        assert self.images.dtype == torch.uint8 and self.images.ndim == 4, self.images.shape
        assert len(self.images) == len(self.labels) == len(self.ids)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, positions: np.ndarray) -> "ImageSet":
        """The images at ``positions``, in that order."""
        index = torch.as_tensor(positions, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index], [self.ids[i] for i in positions])

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

    @property
    def channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.splits["train"].images.shape[2:]
        return int(height), int(width)

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
        return {"source": self.source, "splits": splits, "skipped": len(self.skipped)}
