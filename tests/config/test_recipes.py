"""Recipes: valid configs, close-match errors, precedence, the recipes command, a tiny run each."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cnnlab.cli import recipes_cmd
from cnnlab.config import RECIPE_HELP, RECIPES, RunConfig, build_config, merge_config, recipe_names, recipe_overrides
from cnnlab.errors import CnnlabError


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_is_a_valid_config(name: str) -> None:
    config = merge_config(RunConfig(), recipe_overrides(name))  # builds, so it is checked
    assert config.model.name == RECIPES[name]["model"]["name"]
    assert name in RECIPE_HELP


def test_lesson_is_the_lessons_setup() -> None:
    config = build_config(recipe="lesson")
    train = config.train
    assert (train.optimizer, train.lr, train.epochs, train.patience, train.scheduler) == (
        "adam",
        1e-3,
        15,
        5,
        "plateau",
    )
    assert config.model.name == "simple_cnn" and config.data.batch_size == 128
    assert round(float(config.data.val_split) * 60_000) == 10_000  # the lesson's 10,000 of 60,000
    transfer = config.transfer  # its fine-tuning: the last 10 layers at 1e-5 on plateau, 3 epochs
    assert (transfer.finetune_layers, transfer.finetune_lr, transfer.finetune_scheduler, transfer.finetune_epochs) == (
        10,
        1e-5,
        "plateau",
        3,
    )


def test_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnlab.training import trainer

    train = build_config(recipe="fast").train
    assert train.precision == "bf16-mixed"  # the recipe's intent, saved in config.yaml
    monkeypatch.setattr(trainer, "bf16_is_fast", lambda: False)
    assert trainer.resolve_precision(train) == "32-true"  # emulated bf16 would be slower: fp32
    monkeypatch.setattr(trainer, "bf16_is_fast", lambda: True)
    assert trainer.resolve_precision(train) == "bf16-mixed"


def test_fast_is_one_whole_epoch_on_nearly_all_the_images() -> None:
    """MNIST to 99% in one epoch: the pass always completes, whatever the machine's load."""
    config = build_config(recipe="fast")
    assert config.train.epochs == 1
    assert config.train.time_budget is None  # a budget would cut the epoch short on a busy machine
    assert round(float(config.data.val_split) * 60_000) == 1_000  # 59,000 of MNIST's 60,000 digits to learn from


def test_fast_learns_digits_in_its_one_epoch(tmp_path: Path) -> None:
    """The recipe's network and schedule, as they are: one epoch takes 8x8 digits far above chance."""
    from cnnlab.training.run_fit import fit

    config = merge_config(build_config(recipe="fast", data="digits"), {"runs_dir": str(tmp_path), "name": "one"})
    stage = fit(config, "test").record.stages[0]
    assert stage.epochs == 1
    assert stage.val_at_best is not None and stage.val_at_best.accuracy > 0.5  # chance 0.1; ~20 steps of batch 64


def test_unknown_recipe_names_the_closest() -> None:
    with pytest.raises(CnnlabError, match="did you mean fast"):
        recipe_overrides("fsat")
    with pytest.raises(CnnlabError, match="known recipes"):
        recipe_overrides("zzz")


def test_overrides_are_a_copy() -> None:
    recipe_overrides("fast")["train"]["lr"] = 99.0
    assert RECIPES["fast"]["train"]["lr"] != 99.0


def test_yaml_and_flags_override_the_recipe(tmp_path: Path) -> None:
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  epochs: 7\n  optimizer: sgd\n")
    config = build_config(recipe="fast", config_file=yaml_file, batch_size=32)  # defaults -> recipe -> YAML -> flags
    assert (config.train.epochs, config.data.batch_size, config.model.name) == (7, 32, "fast_cnn_slim")
    assert config.train.optimizer == "sgd"  # untouched recipe values stay


def test_recipes_list_and_show(capsys: pytest.CaptureFixture) -> None:
    assert recipes_cmd.run(argparse.Namespace(recipes_command="list")) == 0
    out = capsys.readouterr().out
    for name in recipe_names():
        assert name in out
    row = {r["recipe"]: r for r in recipes_cmd.recipe_rows()}["fast-cifar"]
    assert "560 s (at most 60 epochs)" in row["training"] and "translate 2 px" in row["augment"]  # the budget shown
    assert "batch 64, 1 epoch, " in {r["recipe"]: r for r in recipes_cmd.recipe_rows()}["fast"]["training"]
    assert max(len(line) for line in out.splitlines()) <= 80  # a pipe or a small terminal: no cut-off columns
    assert "whole command about 10" in out  # what each is for, as sentences under the table
    assert recipes_cmd.run(argparse.Namespace(recipes_command="show", name="fast-cifar")) == 0
    assert "fast_cifar" in capsys.readouterr().out
    with pytest.raises(CnnlabError):
        recipes_cmd.run(argparse.Namespace(recipes_command="show", name="nope"))


def test_recipes_list_shows_the_defaults_a_recipe_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    """A setting a recipe does not give is shown at the schema's default, not at a retyped one."""
    from cnnlab.config import RunConfig, recipes

    monkeypatch.setitem(recipes.RECIPES, "bare", {"train": {"lr": 0.05}})
    row = {r["recipe"]: r for r in recipes_cmd.recipe_rows()}["bare"]
    train, data = RunConfig().train, RunConfig().data
    assert row["training"] == (
        f"{train.optimizer} 0.05, {train.scheduler}, batch {data.batch_size}, "
        f"{train.epochs} epochs, val {data.val_split}"
    )
    assert row["model"] == RunConfig().model.name


def test_parser_registers_list_and_show() -> None:
    parser = argparse.ArgumentParser()
    recipes_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recipes", "show", "lesson"])
    assert (args.recipes_command, args.name, args.func) == ("show", "lesson", recipes_cmd.run)


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_trains_on_tiny_data(name: str, tmp_path: Path) -> None:
    from cnnlab.evaluation.run_evaluation import train_and_evaluate
    from cnnlab.training.run_fit import fit

    config = merge_config(RunConfig(), recipe_overrides(name))
    config = merge_config(
        config,
        {
            "data": {"source": "digits", "batch_size": 512},  # 3 steps: a smoke test, not a fit
            "train": {"epochs": 1},
            "runs_dir": str(tmp_path),
            "name": name,
        },
    )
    if name == "fast":  # the whole path once, figures and report included (they take the time)
        files, metrics = train_and_evaluate(config, "test")
        assert 0.0 <= metrics["accuracy"] <= 1.0
    else:
        files = fit(config, "test").files
    assert files.best.is_file()
    assert files.config.is_file() and f"name: {RECIPES[name]['model']['name']}" in files.config.read_text()
