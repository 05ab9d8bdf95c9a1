"""One schema: every config field is a flag, a YAML key and a Python keyword, with the same checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from cnnlab.cli.main import build_parser
from cnnlab.cli.train_cmd import config_from_args
from cnnlab.config import RunConfig, all_options, build_config, from_dict, merge_config, to_dict
from cnnlab.config.schema import FieldSpec
from cnnlab.errors import CnnlabError

OPTIONS = [spec for spec in all_options() if not spec.positional]


def _valid(spec: FieldSpec) -> tuple[Any, list[str]]:
    """A valid value other than the default, and the command-line words that give it."""
    if spec.kind == "bool":
        return (not spec.default), [spec.flag if not spec.default else "--no-" + spec.flag[2:]]
    if spec.kind == "choice":
        value = next(c for c in reversed(spec.choices) if c != spec.default)
        return value, [spec.flag, str(value)]
    if spec.kind == "pair":
        return (0.8, 1.2), [spec.flag, "0.8", "1.2"]
    if spec.kind == "str":
        value = {
            "val_split": "0.2",
            "test_split": "0.2",
            "devices": "1",
            "weights": "w.safetensors",
            "name": "a-run",
            "runs_dir": "elsewhere",
            "tracking_uri": "sqlite:///elsewhere/mlflow.db",
        }[spec.name]
        return value, [spec.flag, value]
    low = spec.bounds["at_least"] if spec.bounds["at_least"] is not None else spec.bounds["above"]
    value: Any = (low or 0) + (2 if spec.kind == "int" else 0.25)
    high = spec.bounds["at_most"] if spec.bounds["at_most"] is not None else spec.bounds["below"]
    if high is not None:
        value = min(value, high * 0.5 if spec.kind == "float" else high)
    value = int(value) if spec.kind == "int" else float(value)
    if value == spec.default:  # e.g. --finetune-blocks 3: the default itself
        value += 1 if spec.kind == "int" else 0.125
    return value, [spec.flag, str(value)]


def _invalid(spec: FieldSpec) -> tuple[Any, list[str]] | None:
    """A value the bounds refuse, and its words; None for fields without bounds."""
    low = spec.bounds["at_least"] if spec.bounds["at_least"] is not None else spec.bounds["above"]
    if low is None or spec.kind not in ("int", "float"):
        return None
    value = low - 1 if spec.kind == "int" else low - 0.5
    return value, [f"{spec.flag}={value}"]


# Fields that are valid only beside another of their section (a tracking store needs tracking on,
# alternating flips need flips): (name, value, words).
COMPANIONS = {
    "tracking_uri": ("tracking", "mlflow", ["--tracking", "mlflow"]),
    "flip_mode": ("hflip", True, ["--hflip"]),
}


def _from_flags(words: list[str]) -> RunConfig:
    args = build_parser().parse_args(["train", "digits", *words])
    return config_from_args(args)


def _from_yaml(tmp_path: Path, spec: FieldSpec, value: Any) -> RunConfig:
    plain = list(value) if isinstance(value, tuple) else value
    nested = {spec.section: {spec.name: plain}} if spec.section else {spec.name: plain}
    if spec.name in COMPANIONS:
        name, companion, _ = COMPANIONS[spec.name]
        (nested[spec.section] if spec.section else nested)[name] = companion
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(nested))
    return build_config(config_file=path, data="digits")


@pytest.mark.parametrize("spec", OPTIONS, ids=[s.key for s in OPTIONS])
def test_every_field_is_a_flag_a_yaml_key_and_a_keyword(spec: FieldSpec, tmp_path: Path) -> None:
    value, words = _valid(spec)
    companion: dict[str, Any] = {}
    if spec.name in COMPANIONS:
        name, companion_value, companion_words = COMPANIONS[spec.name]
        words, companion = [*words, *companion_words], {name: companion_value}
    by_flag, by_yaml = _from_flags(words), _from_yaml(tmp_path, spec, value)
    by_keyword = build_config(data="digits", **{spec.dest: value}, **companion)
    section = getattr(by_flag, spec.section) if spec.section else by_flag
    assert getattr(section, spec.name) == value
    assert by_flag == by_yaml == by_keyword
    assert by_flag != build_config(data="digits", **companion)  # the value really changed something


@pytest.mark.parametrize("spec", [s for s in OPTIONS if _invalid(s)], ids=[s.key for s in OPTIONS if _invalid(s)])
def test_flags_yaml_and_keywords_refuse_the_same_values_with_the_same_message(spec: FieldSpec, tmp_path: Path) -> None:
    value, words = _invalid(spec)
    messages = []
    for build in (
        lambda: _from_flags(words),
        lambda: _from_yaml(tmp_path, spec, value),
        lambda: build_config(data="digits", **{spec.dest: value}),
    ):
        with pytest.raises(CnnlabError) as caught:
            build()
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == messages[2]
    assert spec.flag in messages[0]


def test_flag_names_are_unique_and_every_option_has_help() -> None:
    dests = [s.dest for s in all_options()]
    assert len(dests) == len(set(dests))
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings


def test_choices_come_from_the_schema() -> None:
    parser = build_parser()._subparsers._group_actions[0].choices["train"]
    by_dest = {a.dest: a for a in parser._actions}
    assert by_dest["optimizer"].choices == ["adam", "adamw", "sgd"]
    assert by_dest["policy"].choices == ["randaugment", "trivialaugment", "none"]
    with pytest.raises(CnnlabError, match=r"--scheduler must be one of .*did you mean cosine"):
        merge_config(RunConfig(), {"train": {"scheduler": "cosin"}})


def test_saved_config_round_trips() -> None:
    config = build_config(recipe="fast", data="digits", rotation=5, brightness=(0.9, 1.1), time_budget=30)
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(config)))) == config


def test_yaml_numbers_are_read_as_the_field_types(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  val_split: 0.2\n  batch_size: 64.0\ntrain:\n  lr: 1\n  devices: 2\n")
    config = build_config(config_file=path)
    assert (config.data.val_split, config.data.batch_size, config.train.lr, config.train.devices) == (
        "0.2",
        64,
        1.0,
        "2",
    )
    with pytest.raises(CnnlabError, match="--batch-size must be a whole number"):
        merge_config(RunConfig(), {"data": {"batch_size": 64.5}})


def test_the_none_spelling_clears_an_optional_field() -> None:
    assert build_config(recipe="fast", augment="strong", policy="none").augment.policy is None
    assert _from_flags(["--augment", "strong", "--policy", "none"]).augment.policy is None
    assert _from_flags(["--finetune-epochs", "none"]).transfer.finetune_epochs is None


def test_unknown_keyword_names_the_closest() -> None:
    with pytest.raises(CnnlabError, match="unknown option 'epoch'; did you mean epochs"):
        build_config(epoch=3)
    with pytest.raises(CnnlabError, match=r"unknown config key 'trian'.*did you mean train"):
        merge_config(RunConfig(), {"trian": {}})
