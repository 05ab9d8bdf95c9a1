"""What ``cnnlab tune`` searches: the options that matter, as Optuna parameters around the user's run.

Every parameter is a ``cnnlab train`` option (or an augmentation preset and a strength that
scales its magnitudes), so a trial's settings go through ``build_config`` and its checks like
any command line, and the best ones become a config file and a command. The ranges are fixed by
the base options alone (a resumed study must see the same space), and include the base values,
so trial 0 can be the user's own run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnlab.config import AugmentConfig, RunConfig, build_config, merge_config, resolve_augment, to_dict

MAGNITUDES = ("rotation", "width_shift", "height_shift", "zoom", "shear", "translate", "random_erasing")
TUNED_PRESETS = ("none", "light", "lesson", "strong")
BATCHES = (32, 64, 128)
WEIGHT_DECAY_FLOOR = 1e-6  # the search's "no decay": a log range cannot hold 0


@dataclass(frozen=True)
class Param:
    """One searched option: ``kind`` float, int or choice; floats on a log scale when ``log``."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high))
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)


def _around(low: float, high: float, value: float) -> tuple[float, float]:
    return min(low, value), max(high, value)


def transfer_run(config: RunConfig) -> bool:
    return config.model.pretrained or bool(config.model.weights)


def search_space(base: RunConfig) -> list[Param]:
    """The parameters searched for ``base``: learning rates, weight decay, augmentation, label
    smoothing, batch size, and epochs (from scratch) or fine-tuning blocks and epochs (transfer)."""
    sgd = base.train.optimizer == "sgd"
    lr = float(base.train.lr) if base.train.lr != "auto" else 1e-3
    space = [
        Param("lr", "float", *_around(1e-3 if sgd else 1e-4, 0.5 if sgd else 3e-2, lr), log=True),
        Param(
            "weight_decay",
            "float",
            *_around(WEIGHT_DECAY_FLOOR, 1e-2, max(base.train.weight_decay, WEIGHT_DECAY_FLOOR)),
            log=True,
        ),
        Param("augment", "choice", choices=TUNED_PRESETS),
        Param("augment_strength", "float", 0.5, 1.5),
        Param("label_smoothing", "float", *_around(0.0, 0.2, base.augment.label_smoothing)),
        Param("batch_size", "choice", choices=tuple(sorted({*BATCHES, base.data.batch_size}))),
    ]
    if transfer_run(base):
        blocks = base.transfer.finetune_blocks
        epochs = base.transfer.finetune_epochs or base.train.epochs
        space += [
            Param("finetune_lr", "float", *_around(1e-5, 1e-3, base.transfer.finetune_lr), log=True),
            Param("finetune_blocks", "int", *_around(1, 6, blocks)),
            Param("finetune_epochs", "int", *_around(2, 8, epochs)),
        ]
    else:
        space.append(Param("epochs", "int", max(1, base.train.epochs // 3), base.train.epochs))
    return space


def preset_of(augment: AugmentConfig) -> str | None:
    """The searched preset ``augment`` is (label smoothing aside), or None for a custom augmentation."""
    plain = dataclasses.replace(augment, label_smoothing=0.0)
    return next((name for name in TUNED_PRESETS if resolve_augment(name) == plain), None)


def base_params(base: RunConfig) -> dict[str, Any] | None:
    """The base run as the space's parameters (trial 0), or None when its augmentation is no preset."""
    preset = preset_of(base.augment)
    if preset is None:
        return None
    values: dict[str, Any] = {
        "lr": float(base.train.lr) if base.train.lr != "auto" else 1e-3,
        "weight_decay": max(base.train.weight_decay, WEIGHT_DECAY_FLOOR),
        "augment": preset,
        "label_smoothing": base.augment.label_smoothing,
        "batch_size": base.data.batch_size,
    }
    if preset != "none":
        values["augment_strength"] = 1.0
    if transfer_run(base):
        values.update(
            finetune_lr=base.transfer.finetune_lr,
            finetune_blocks=base.transfer.finetune_blocks,
            finetune_epochs=base.transfer.finetune_epochs or base.train.epochs,
        )
    else:
        values["epochs"] = base.train.epochs
    return values


def scaled_augment(preset: str, strength: float, label_smoothing: float) -> AugmentConfig:
    """A preset with its magnitudes (rotation, shifts, zoom, shear, ...) times ``strength``."""
    augment = resolve_augment(preset)
    changes: dict[str, Any] = {"label_smoothing": label_smoothing}
    for name in MAGNITUDES:
        value = getattr(augment, name)
        if value:
            scaled = value * strength
            if name == "translate":
                scaled = max(1, int(round(scaled)))
            elif name in ("width_shift", "height_shift", "zoom"):
                scaled = min(scaled, 0.9)
            elif name == "random_erasing":
                scaled = min(scaled, 1.0)
            changes[name] = scaled
    for name in ("brightness", "contrast"):
        pair = getattr(augment, name)
        if pair is not None:  # the range around 1 widened or narrowed
            changes[name] = (max(0.0, 1 - (1 - pair[0]) * strength), 1 + (pair[1] - 1) * strength)
    return dataclasses.replace(augment, **changes)


def trial_config(base: RunConfig, params: dict[str, Any], name: str, runs_dir: str, budget: float | None) -> RunConfig:
    """The base run with a trial's parameters, named and budgeted, checked like a command line."""
    augment = scaled_augment(params["augment"], params.get("augment_strength", 1.0), params["label_smoothing"])
    options: dict[str, Any] = {
        "lr": params["lr"],
        "weight_decay": params["weight_decay"],
        "batch_size": params["batch_size"],
        "name": name,
        "runs_dir": runs_dir,
        "time_budget": budget,
    }
    for key in ("epochs", "finetune_lr", "finetune_blocks", "finetune_epochs"):
        if key in params:
            options[key] = params[key]
    config = build_config(base=base, **options)
    return merge_config(config, {"augment": dataclasses.asdict(augment)}, where="the search")


def config_for_file(config: RunConfig) -> dict[str, Any]:
    """A trial's config as ``cnnlab train --config`` takes it: every option but the folder and data source."""
    values = to_dict(config)
    values.pop("name", None)
    values.pop("runs_dir", None)
    values.get("data", {}).pop("source", None)
    return values


def changed_flags(base: RunConfig, best: RunConfig) -> list[str]:
    """Command-line flags that turn ``base`` into ``best`` (folder and budget options left out)."""
    from cnnlab.config import all_options

    flags: list[str] = []
    for spec in all_options():
        if spec.positional or spec.dest in ("name", "runs_dir", "time_budget"):
            continue
        section = getattr(base, spec.section) if spec.section else base
        after = getattr(getattr(best, spec.section) if spec.section else best, spec.name)
        if getattr(section, spec.name) == after:
            continue
        if spec.kind == "bool":
            flags.append(spec.flag if after else "--no-" + spec.flag[2:])
        elif after is None:
            flags += [spec.flag, "none"]
        elif spec.kind == "pair":
            flags += [spec.flag, *(f"{v:.3g}" for v in after)]
        elif isinstance(after, float):
            flags += [spec.flag, f"{after:.4g}"]
        else:
            flags += [spec.flag, str(after)]
    return flags


__all__ = ["Param", "base_params", "changed_flags", "config_for_file", "scaled_augment", "search_space", "trial_config"]
