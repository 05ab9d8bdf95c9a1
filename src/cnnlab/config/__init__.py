"""One run configuration, flowing one way: defaults, a recipe, a YAML file, then single options.

Every section is a frozen dataclass whose fields carry their own help text, bounds and allowed
values (``schema.option``); flags, YAML keys, Python keywords and validation all derive from
them. This package sits at the bottom of cnnlab: it imports nothing of cnnlab but ``errors``,
and nothing heavy (no numpy, no torch), so ``cnnlab --help`` stays fast.
"""

from cnnlab.config.augment import MIXING_FIELDS, PRESETS, AugmentConfig, resolve_augment
from cnnlab.config.build import (
    all_options,
    augment_from_options,
    build_config,
    config_yaml,
    from_dict,
    load_yaml,
    merge_config,
    nest,
    options_by_dest,
    to_dict,
)
from cnnlab.config.recipes import RECIPE_HELP, RECIPES, recipe_names, recipe_overrides
from cnnlab.config.schema import FieldSpec
from cnnlab.config.sections import SECTIONS, DataConfig, ModelConfig, RunConfig, TrainConfig, TransferConfig
from cnnlab.config.split_spec import SplitSpec

__all__ = [
    "MIXING_FIELDS",
    "PRESETS",
    "RECIPES",
    "RECIPE_HELP",
    "SECTIONS",
    "AugmentConfig",
    "DataConfig",
    "FieldSpec",
    "ModelConfig",
    "RunConfig",
    "SplitSpec",
    "TrainConfig",
    "TransferConfig",
    "all_options",
    "augment_from_options",
    "build_config",
    "config_yaml",
    "from_dict",
    "load_yaml",
    "merge_config",
    "nest",
    "options_by_dest",
    "recipe_names",
    "recipe_overrides",
    "resolve_augment",
    "to_dict",
]
