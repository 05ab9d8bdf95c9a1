"""``compare_models``: a comparison from the options of ``cnnlab compare``, for the CLI and Python.

The options are checked here, not in the CLI, so ``cnnlab.compare(...)`` refuses the same things:
options that only train need data, ``weights`` pairs a model with a file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnlab.config import build_config
from cnnlab.errors import CnnlabError

if TYPE_CHECKING:
    from cnnlab.comparison.architectures import Comparison

DEFAULT_IMAGE_SIZE = 224  # the lesson's, and the size the compared ImageNet models were made for
DEFAULT_BATCH = 16  # throughput batch: large enough to show batching, small enough for VGG16 on a CPU
DEFAULT_REPEATS = 20
# Options that change what is measured; every other run option trains, so it needs data.
MEASURE_OPTIONS = frozenset({"image_size", "batch_size", "channels_last", "pretrained"})


def parse_weights(pairs: list[str]) -> dict[str, str]:
    """``["resnet50=r50.safetensors"]`` -> ``{"resnet50": "r50.safetensors"}``, checked."""
    weights = {}
    for pair in pairs:
        model, sep, path = pair.partition("=")
        if not sep or not model.strip() or not path.strip():
            raise CnnlabError(f"--weights takes MODEL=FILE (e.g. resnet50=resnet50.safetensors), got '{pair}'")
        weights[model.strip()] = path.strip()
    return weights


def compare_models(
    models: list[str],
    options: Mapping[str, Any],
    *,
    recipe: str | None = None,
    config: str | Path | None = None,
    augment: str | None = None,
    threads: int | None = None,
    repeats: int = DEFAULT_REPEATS,
    weights: Mapping[str, str] | None = None,
    out: str | Path | None = None,
    command: str = "cnnlab compare",
) -> Comparison:
    """Measures each model and, when ``options`` has ``data``, trains each the same way on it.

    Args:
        options: run options by their config names (``image_size``, ``epochs``, ``data``, ...).
        weights: model name -> local state dict file.

    Raises:
        CnnlabError: training options without data, bad option values, no model named.
    """
    from cnnlab.comparison.architectures import CompareSettings, compare_architectures

    options = dict(options)
    data = options.get("data")
    training_only = sorted(f"--{k.replace('_', '-')}" for k in options if k not in MEASURE_OPTIONS | {"data"})
    if data is None and (training_only or recipe or config or augment):
        raise CnnlabError(
            f"{', '.join(training_only) or 'a setup'} only applies to training; add --data DATA or drop it"
        )
    run_config = build_config(recipe=recipe, config_file=config, augment=augment, **options)
    settings = CompareSettings(
        image_size=options.get("image_size") or DEFAULT_IMAGE_SIZE,
        batch_size=options.get("batch_size") or DEFAULT_BATCH,
        threads=threads,
        repeats=repeats,
        channels_last=run_config.train.channels_last,
        pretrained=run_config.model.pretrained,
        weights=dict(weights or {}),
    )
    return compare_architectures(
        list(models),
        settings,
        command,
        Path(out) if out is not None else None,
        run_config if data is not None else None,
    )
