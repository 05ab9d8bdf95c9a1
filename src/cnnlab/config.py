"""One run configuration, flowing one way: defaults, then a YAML file, then command-line flags.

Every section is a frozen dataclass. Unknown keys are an error with a close-match suggestion,
and the resolved configuration is saved as ``config.yaml`` in every run folder.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from cnnlab.augment.options import AugmentConfig
from cnnlab.errors import CnnlabError


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are split and sized."""

    source: str = "mnist-sample"  # an image folder, a CSV listing, or a built-in set name
    image_size: int | None = None  # side in px; None: the data's own size, or the model's
    channels: int | None = None  # 1 or 3; None: from the data (grayscale -> 1) or the model
    val_split: str = "0.1"  # fraction of all images, a count, or "last:N" (the lesson's split)
    test_split: str = "0.1"  # used only when the data has no test split of its own
    batch_size: int = 128  # the lesson's batch size
    workers: int = 4  # decoding threads when reading an image folder
    sampler: str = "shuffle"  # shuffle, or balanced: every class drawn equally often


@dataclass(frozen=True)
class ModelConfig:
    """Which network, and where its starting weights come from."""

    name: str = "simple_cnn"
    pretrained: bool = False  # ImageNet weights (built in for efficientnet_lite0, else the hub)
    weights: str | None = None  # a local .safetensors/.pth state dict; never unpickled
    dropout: float = 0.5  # the lesson's dropout before the last layer
    head: str = "default"  # default (the model's own), linear, lesson, production
    binary_head: str = "softmax"  # softmax (2 outputs) or sigmoid (1 output, the lesson's binary way)


@dataclass(frozen=True)
class TransferConfig:
    """Two-stage transfer learning: train the head on a frozen base, then fine-tune its top."""

    stages: str = "auto"  # auto (both when pretrained, else full), frozen, both, full
    # Lengths chosen for a 2-core CPU (BENCHMARKS.md): cached stage-1 epochs cost milliseconds;
    # stage 2 at 1e-5 gave under a point in 3 epochs, each a minute per 1,000 images at 224 px.
    frozen_epochs: int | None = None  # stage 1; None: max(train.epochs, 50) on cached features, else train.epochs
    finetune_epochs: int | None = 3  # stage 2; None: train.epochs
    finetune_layers: int = 10  # unfreeze the last N layers (the lesson's Keras default)
    finetune_blocks: int | None = None  # or the last K blocks, by the model's own structure
    finetune_lr: float = 1e-5  # the lesson's fine-tuning learning rate
    layer_decay: float | None = None  # LR multiplier per block going down (e.g. 0.75); None: off
    feature_cache: bool = True  # frozen base: compute features once, train only the head


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation and its callbacks; defaults are the lesson's Keras values."""

    epochs: int = 15
    lr: float = 1e-3  # Adam step size; the lesson's default
    weight_decay: float = 0.0
    patience: int = 5  # EarlyStopping on val_loss; the best weights are restored
    lr_patience: int = 3  # ReduceLROnPlateau on val_loss
    lr_factor: float = 0.5
    min_lr: float = 1e-7
    class_weights: str = "none"  # none, or auto: inverse class frequency in the loss
    optimizer: str = "adam"  # adam, adamw, sgd (momentum, nesterov)
    scheduler: str = "plateau"  # plateau (ReduceLROnPlateau, the lesson's), onecycle, cosine, none
    momentum: float = 0.9  # sgd only
    time_budget: float | None = None  # seconds of training; schedules fit inside it
    # NHWC memory layout: same results, faster training steps here (BENCHMARKS.md): simple_cnn 1.3x,
    # fast_cifar 1.5x, fast_cnn 2x, EfficientNet-Lite0 fine-tuning 1.5x. Off with --no-channels-last.
    channels_last: bool = True
    compile: bool = False  # torch.compile the model where it measurably helps
    seed: int = 42
    deterministic: bool = False  # bit-identical metrics on the same machine, a little slower
    accelerator: str = "auto"  # cpu, cuda, mps or auto
    devices: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on CUDA with bf16, 16-mixed on other GPUs, 32 on CPU


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs; saved as the run folder's ``config.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    name: str | None = None  # run folder name; None: <model>-<data>, numbered if taken
    runs_dir: str = "runs"


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "augment": AugmentConfig,
    "train": TrainConfig,
    "transfer": TransferConfig,
}


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(options)}"


def _section_from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = [f.name for f in fields(cls)]
    for key in values:
        if key not in names:
            raise CnnlabError(f"unknown config key '{where}.{key}'{_suggest(key, names)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**converted)


def merge_config(base: RunConfig, updates: Mapping[str, Any], where: str = "config") -> RunConfig:
    """Returns ``base`` with ``updates`` (a nested dict, as in the YAML file) applied.

    Raises:
        CnnlabError: on a key that no section has, naming the closest one.
    """
    top = [f.name for f in fields(RunConfig)]
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in top:
            raise CnnlabError(f"unknown config key '{key}' in {where}{_suggest(key, top)}")
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise CnnlabError(f"'{key}' in {where} must be a mapping of options")
            current = dataclasses.asdict(getattr(base, key))
            current.update(value)
            changes[key] = _section_from_dict(SECTIONS[key], current, key)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def load_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML config file (safe loader only: no Python objects)."""
    if not path.is_file():
        raise CnnlabError(f"config file '{path}' not found; check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CnnlabError(f"config file '{path}' is not valid YAML: {str(exc).splitlines()[0]}")
    if not isinstance(data, dict):
        raise CnnlabError(f"config file '{path}' must hold a mapping (section: options)")
    return data


def to_dict(config: RunConfig) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) for YAML and JSON."""

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(config))


def from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Rebuilds a RunConfig from ``to_dict`` output (e.g. a run's config.yaml)."""
    return merge_config(RunConfig(), values)


def save_config(config: RunConfig, path: Path) -> None:
    """Writes the resolved config as YAML."""
    from cnnlab.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise CnnlabError(message)


def validate(config: RunConfig) -> None:
    """Checks types and ranges before any expensive work; each failure names the option and fix.

    Raises:
        CnnlabError: for the first bad value found.
    """
    data, model, train = config.data, config.model, config.train
    _check(bool(str(data.source).strip()), "no data given; name an image folder or a built-in set (cnnlab train mnist-sample)")
    _check(data.image_size is None or (isinstance(data.image_size, int) and 8 <= data.image_size <= 4096),
           f"--image-size must be a whole number from 8 to 4096, got {data.image_size}")
    _check(data.channels in (None, 1, 3), f"--channels must be 1 or 3, got {data.channels}")
    _check(isinstance(data.batch_size, int) and data.batch_size >= 1, f"--batch-size must be at least 1, got {data.batch_size}")
    _check(isinstance(data.workers, int) and data.workers >= 1, f"--workers must be at least 1, got {data.workers}")
    _check(data.sampler in ("shuffle", "balanced"), f"--sampler must be shuffle or balanced, got '{data.sampler}'")
    _check(isinstance(model.dropout, (int, float)) and 0 <= model.dropout < 1,
           f"--dropout must be in [0, 1), got {model.dropout}")
    _check(isinstance(train.epochs, int) and train.epochs >= 1, f"--epochs must be at least 1, got {train.epochs}")
    _check(isinstance(train.lr, (int, float)) and train.lr > 0, f"--lr must be greater than 0, got {train.lr}")
    _check(isinstance(train.weight_decay, (int, float)) and train.weight_decay >= 0,
           f"--weight-decay must be 0 or more, got {train.weight_decay}")
    _check(isinstance(train.patience, int) and train.patience >= 1, f"--patience must be at least 1, got {train.patience}")
    _check(isinstance(train.lr_patience, int) and train.lr_patience >= 0,
           f"--lr-patience must be 0 or more, got {train.lr_patience}")
    _check(isinstance(train.lr_factor, (int, float)) and 0 < train.lr_factor < 1,
           f"--lr-factor must be between 0 and 1, got {train.lr_factor}")
    _check(isinstance(train.min_lr, (int, float)) and train.min_lr >= 0, f"--min-lr must be 0 or more, got {train.min_lr}")
    _check(train.class_weights in ("none", "auto"), f"--class-weights must be none or auto, got '{train.class_weights}'")
    _check(isinstance(train.seed, int), f"--seed must be a whole number, got {train.seed}")
    _check(train.optimizer in ("adam", "adamw", "sgd"), f"--optimizer must be adam, adamw or sgd, got '{train.optimizer}'")
    _check(train.scheduler in ("plateau", "onecycle", "cosine", "none"),
           f"--scheduler must be plateau, onecycle, cosine or none, got '{train.scheduler}'")
    _check(train.time_budget is None or train.time_budget > 0, f"--time-budget must be > 0 seconds, got {train.time_budget}")
    _check(model.head in ("default", "linear", "lesson", "production"),
           f"--head must be default, linear, lesson or production, got '{model.head}'")
    _check(model.binary_head in ("softmax", "sigmoid"), f"--binary-head must be softmax or sigmoid, got '{model.binary_head}'")
    transfer = config.transfer
    _check(transfer.stages in ("auto", "frozen", "both", "full"),
           f"--stages must be auto, frozen, both or full, got '{transfer.stages}'")
    _check(transfer.finetune_lr > 0, f"--finetune-lr must be greater than 0, got {transfer.finetune_lr}")
    _check(transfer.finetune_layers >= 0, f"--finetune-layers must be 0 or more, got {transfer.finetune_layers}")
    _check(train.accelerator in ("auto", "cpu", "cuda", "gpu", "mps"),
           f"--accelerator must be auto, cpu, cuda or mps, got '{train.accelerator}'")
    precisions = ("auto", "32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
    _check(str(train.precision) in precisions, f"--precision must be one of {', '.join(precisions)}, got '{train.precision}'")
    _check(config.name is None or ("/" not in config.name and "\\" not in config.name and config.name not in (".", "..")),
           f"--name must be a plain folder name, got '{config.name}'")
