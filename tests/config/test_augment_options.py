"""Augmentation options: validation, presets, and the warnings about what they do to a class."""

from __future__ import annotations

from dataclasses import fields

import pytest

from cnnlab.augment import meaning_warnings
from cnnlab.config import PRESETS, AugmentConfig, resolve_augment
from cnnlab.errors import CnnlabError

DIGITS = [str(i) for i in range(10)]


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_sets_exactly_its_values(name: str) -> None:
    cfg = resolve_augment(name)
    default = AugmentConfig()
    changed = {
        f.name: getattr(cfg, f.name) for f in fields(AugmentConfig) if getattr(cfg, f.name) != getattr(default, f.name)
    }
    assert changed == {k: v for k, v in PRESETS[name].items() if v != getattr(default, k)}
    assert cfg.geometric == (name != "none")  # every preset but none moves pixels


def test_lesson_preset_is_the_lessons_generator() -> None:
    cfg = resolve_augment("lesson")
    assert (cfg.rotation, cfg.width_shift, cfg.height_shift, cfg.hflip, cfg.zoom, cfg.fill_mode) == (
        20.0,
        0.2,
        0.2,
        True,
        0.2,
        "nearest",
    )
    prod = resolve_augment("production")
    assert prod.shear == pytest.approx(8.6) and prod.brightness == (0.8, 1.2)
    assert resolve_augment("strong").policy is not None and resolve_augment("strong").random_erasing > 0


def test_overrides_win_and_none_keeps_the_preset() -> None:
    cfg = resolve_augment("lesson", rotation=5, hflip=None)
    assert cfg.rotation == 5.0 and cfg.hflip is True


def test_unknown_preset_suggests_close_match() -> None:
    with pytest.raises(CnnlabError, match="did you mean lesson"):
        resolve_augment("leson")


def test_unknown_field_suggests_close_match() -> None:
    with pytest.raises(CnnlabError, match="did you mean rotation"):
        resolve_augment("none", rotaton=10)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rotation": 400}, "--rotation must be between 0 and 180, got 400"),
        ({"zoom": 1.5}, "--zoom"),
        ({"width_shift": -0.1}, "--width-shift"),
        ({"brightness": (1.2, 0.8)}, "--brightness needs LO <= HI"),
        ({"brightness": (0.8,)}, "--brightness takes two numbers"),
        ({"fill_mode": "neerest"}, "did you mean nearest"),
        ({"policy": "randaug"}, "--policy"),
        ({"random_erasing": 2}, "--random-erasing"),
        ({"label_smoothing": 1.0}, "--label-smoothing"),
        ({"rotation": "20"}, "--rotation must be a number"),
        ({"hflip": "yes"}, "--hflip must be true or false"),
    ],
)
def test_out_of_range_values_name_the_flag(kwargs: dict, message: str) -> None:
    with pytest.raises(CnnlabError, match=message):
        AugmentConfig(**kwargs)


def test_yaml_lists_become_tuples() -> None:
    assert AugmentConfig(contrast=[0.9, 1.1]).contrast == (0.9, 1.1)


def test_meaning_warnings_fire_for_flips_and_big_rotation_on_digits() -> None:
    warnings = meaning_warnings(AugmentConfig(vflip=True, hflip=True, rotation=90), 1, DIGITS)
    assert any("--vflip" in w for w in warnings)
    assert any("--hflip" in w for w in warnings)
    assert any("--rotation" in w for w in warnings)


def test_meaning_warnings_quiet_for_lesson_rotation_and_photos() -> None:
    assert meaning_warnings(AugmentConfig(rotation=20), 1, DIGITS) == []
    assert meaning_warnings(resolve_augment("production"), 3, ["cat", "dog"]) == []


def test_policy_on_grayscale_warns() -> None:
    assert any("grayscale" in w for w in meaning_warnings(AugmentConfig(policy="randaugment"), 1, ["a", "b"]))
