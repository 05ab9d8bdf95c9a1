"""cnnlab: train, evaluate, explain and shrink CNN image classifiers, from Python or the command line.

    import cnnlab
    run = cnnlab.train("mnist-sample", model="simple_cnn", epochs=5)
    run.metrics["accuracy"]; run.plot_history(); run.predict(["digit.png"])

The functions and :class:`Run` are those of :mod:`cnnlab.api`; they are imported on first use,
so ``import cnnlab`` (and ``cnnlab --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cnnlab.version import __version__

if TYPE_CHECKING:
    from cnnlab.api import (
        Run,
        compare,
        configure,
        distill,
        evaluate,
        label_issues,
        load_run,
        lr_find,
        predict,
        resume,
        serve,
        train,
        tune,
    )

__all__ = [
    "Run",
    "__version__",
    "compare",
    "configure",
    "distill",
    "evaluate",
    "explain",
    "label_issues",
    "load_run",
    "lr_find",
    "predict",
    "resume",
    "serve",
    "train",
    "tune",
]
_SUBPACKAGES = ("explain",)  # packages whose functions are public too: cnnlab.explain.gradcam(run, image)
_API = tuple(name for name in __all__ if name not in ("__version__", *_SUBPACKAGES))


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("cnnlab.api"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"cnnlab.{name}")
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
