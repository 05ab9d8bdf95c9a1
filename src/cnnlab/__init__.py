"""cnnlab: train, evaluate, explain and shrink CNN image classifiers."""

__version__ = "0.1.0"
