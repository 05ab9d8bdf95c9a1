"""One way to build a RunConfig: defaults, then a recipe, a YAML file, a preset, then single options.

The command line and the Python API both end here, with options named as flat keywords
(``epochs=5``, ``model="resnet18"``, ``data="photos/"``): the same names, values and checks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cnnlab.config.augment import AugmentConfig, resolve_augment
from cnnlab.config.recipes import recipe_overrides
from cnnlab.config.schema import FieldSpec, field_specs
from cnnlab.config.sections import SECTIONS, RunConfig
from cnnlab.errors import CnnlabError, suggest


def all_options() -> tuple[FieldSpec, ...]:
    """Every option of a run, section by section, then the top-level ones (name, runs_dir)."""
    specs = [s for section, cls in SECTIONS.items() for s in field_specs(cls, section)]
    return (*specs, *field_specs(RunConfig, None))


def options_by_dest() -> dict[str, FieldSpec]:
    """Options keyed by their flat name (``epochs``, ``model``, ``data``, ``rotation``, ...)."""
    return {spec.dest: spec for spec in all_options()}


def _section_from_dict(cls: type, values: Mapping[str, Any], where: str) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            hint = suggest(key, names, "known keys: " + ", ".join(names))
            raise CnnlabError(f"unknown config key '{where}.{key}'{hint}")
    return cls(**values)


def merge_config(base: RunConfig, updates: Mapping[str, Any], where: str = "config") -> RunConfig:
    """Returns ``base`` with ``updates`` (a nested dict, as in the YAML file) applied, checked.

    Raises:
        CnnlabError: on a key that no section has (naming the closest one), or a bad value.
    """
    top = [f.name for f in dataclasses.fields(RunConfig)]
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in top:
            hint = suggest(key, top, "known keys: " + ", ".join(top))
            raise CnnlabError(f"unknown config key '{key}' in {where}{hint}")
        if key in SECTIONS:
            if not isinstance(value, Mapping):
                raise CnnlabError(f"'{key}' in {where} must be a mapping of options")
            current = {f.name: getattr(getattr(base, key), f.name) for f in dataclasses.fields(SECTIONS[key])}
            changes[key] = _section_from_dict(SECTIONS[key], {**current, **value}, key)
        else:
            changes[key] = value
    return dataclasses.replace(base, **changes)


def load_yaml(path: Path) -> dict[str, Any]:
    """Reads a YAML config file (safe loader only: no Python objects)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"config file '{path}' not found; check the --config path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise CnnlabError(f"config file '{path}' is not valid YAML: {str(exc).splitlines()[0]}") from None
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

    result: dict[str, Any] = plain(dataclasses.asdict(config))
    return result


def from_dict(values: Mapping[str, Any]) -> RunConfig:
    """Rebuilds a RunConfig from ``to_dict`` output (e.g. a run's config.yaml)."""
    return merge_config(RunConfig(), values)


def config_yaml(config: RunConfig) -> str:
    """The resolved config as YAML text (what a run folder's config.yaml holds)."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def nest(options: Mapping[str, Any]) -> dict[str, Any]:
    """Flat options (``epochs=5``) as the nested updates merge_config takes (``{"train": {"epochs": 5}}``).

    Raises:
        CnnlabError: for an unknown option, naming the closest one.
    """
    known = options_by_dest()
    updates: dict[str, Any] = {}
    for dest, value in options.items():
        spec = known.get(dest)
        if spec is None:
            raise CnnlabError(f"unknown option '{dest}'{suggest(dest, known, 'see cnnlab train --help')}")
        if spec.section is None:
            updates[spec.name] = value
        else:
            updates.setdefault(spec.section, {})[spec.name] = value
    return updates


def build_config(
    recipe: str | None = None,
    config_file: str | Path | None = None,
    augment: str | None = None,
    base: RunConfig | None = None,
    **options: Any,
) -> RunConfig:
    """Defaults (or ``base``), then ``recipe``, then the YAML ``config_file``, then options.

    Args:
        recipe: a named setup (``cnnlab recipes list``).
        config_file: a YAML file of nested options.
        augment: an augmentation preset; it replaces the augmentation so far, and single
            augmentation options still apply on top of it.
        **options: single options by flat name, e.g. ``data="photos/"``, ``epochs=5``,
            ``model="resnet18"``, ``rotation=10``.

    Raises:
        CnnlabError: for an unknown recipe, file, option or key, or a value out of range.
    """
    config = base or RunConfig()
    if recipe:
        config = merge_config(config, recipe_overrides(recipe), where=f"recipe '{recipe}'")
    if config_file is not None:
        config = merge_config(config, load_yaml(Path(config_file)), where=str(config_file))
    if augment is not None:
        config = dataclasses.replace(config, augment=resolve_augment(augment))
    return merge_config(config, nest(options), where="the options")


def augment_from_options(preset: str | None, default_preset: str = "none", **options: Any) -> AugmentConfig:
    """An AugmentConfig from a preset and single augmentation options (``rotation=10``)."""
    base = resolve_augment(preset or default_preset)
    updates = nest(options)
    unknown = set(updates) - {"augment"}
    if unknown:
        raise CnnlabError(f"not an augmentation option: {', '.join(sorted(options))}")
    return dataclasses.replace(base, **updates.get("augment", {}))
