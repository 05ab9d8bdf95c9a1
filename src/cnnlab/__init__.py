"""cnnlab: train, evaluate, explain and shrink CNN image classifiers."""

from cnnlab.version import __version__

__all__ = ["__version__"]
