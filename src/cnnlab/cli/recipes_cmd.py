"""``cnnlab recipes``: list the named training recipes, or show one as YAML to copy and edit."""

from __future__ import annotations

import argparse
from typing import Any

import yaml


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recipes",
        help="named training setups for --recipe (lesson, fast, fast-cifar)",
        description="Named training recipes: use with 'cnnlab train DATA --recipe NAME'; any flag overrides them.",
    )
    commands = p.add_subparsers(dest="recipes_command", metavar="COMMAND", required=True)
    commands.add_parser("list", help="table of the recipes and their main settings")
    show = commands.add_parser("show", help="one recipe as YAML (a starting point for --config)")
    show.add_argument("name", metavar="RECIPE", help="recipe name, as in 'cnnlab recipes list'")
    p.set_defaults(func=run)
    return p


def _augment_text(augment: dict[str, Any]) -> str:
    """Short summary of the augmentation overrides, e.g. 'rot 10, shift 0.1, smooth 0.1'."""
    parts = []
    if augment.get("hflip"):
        parts.append("alternating flip" if augment.get("flip_mode") == "alternate" else "flip")
    if augment.get("rotation"):
        parts.append(f"rot {augment['rotation']:g}°")
    shift = max(augment.get("width_shift", 0), augment.get("height_shift", 0))
    if shift:
        parts.append(f"shift {shift:g}")
    if augment.get("translate"):
        parts.append(f"translate {augment['translate']} px")
    if augment.get("label_smoothing"):
        parts.append(f"smooth {augment['label_smoothing']:g}")
    return ", ".join(parts) or "none"


def _training_text(train: dict[str, Any], data: dict[str, Any]) -> str:
    """Optimiser, schedule, batch, length and validation share, e.g. 'sgd 0.2, onecycle, batch 256, ...'.

    ``train`` and ``data`` are whole sections (the defaults under the recipe), never retyped defaults.
    """
    length = f"{train['epochs']} epoch{'s' if train['epochs'] != 1 else ''}"
    if train["time_budget"]:  # the schedule fits the time; the epochs are only an upper bound
        length = f"{train['time_budget']:g} s (at most {length})"
    lookahead = f" + lookahead {train['lookahead']}" if train.get("lookahead") else ""
    return (
        f"{train['optimizer']} {train['lr']:g}{lookahead}, {train['scheduler']}, "
        f"batch {data['batch_size']}, {length}, val {data['val_split']}"
    )


def recipe_rows() -> list[dict[str, str]]:
    """One row of display strings per recipe (what ``recipes list`` prints)."""
    from cnnlab.config import RECIPE_HELP, from_dict, recipe_names, recipe_overrides, to_dict

    rows = []
    for name in recipe_names():
        recipe = recipe_overrides(name)
        resolved = to_dict(from_dict(recipe))  # the defaults under the recipe: what a run would use
        train, data, model = resolved["train"], resolved["data"], resolved["model"]
        speed = [
            flag
            for flag, on in (("channels_last", train.get("channels_last")), ("compile", train.get("compile")))
            if on
        ]
        if train.get("precision") == "bf16-mixed":
            speed.append("bf16 where the CPU/GPU has it natively")  # else fp32: emulated bf16 is slower
        elif train["precision"] != "auto":
            speed.append(train["precision"])
        rows.append(
            {
                "recipe": name,
                "model": model["name"],
                "training": _training_text(train, data),
                "augment": _augment_text(recipe.get("augment", {})),
                "speed": ", ".join(speed) or "-",
                "for": RECIPE_HELP.get(name, ""),
            }
        )
    return rows


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnlab.config import recipe_overrides

    console = Console()
    if args.recipes_command == "show":
        overrides = recipe_overrides(args.name)  # CnnlabError with a close match when unknown
        console.print(yaml.safe_dump(overrides, sort_keys=False), end="", markup=False, highlight=False)
        return 0
    rows = recipe_rows()
    table = Table(title="Training recipes (cnnlab train DATA --recipe NAME; flags override)")
    settings = [column for column in rows[0] if column != "for"]
    for column in settings:  # wrapped at spaces, so the table fits an 80-column terminal
        table.add_column(column, no_wrap=column == "recipe")
    for row in rows:
        table.add_row(*(row[column] for column in settings))
    console.print(table)
    # What each is for, as paragraphs under the table: a column of sentences folds into one
    # word per line on an 80-column terminal or in a pipe.
    for row in rows:
        console.print(f"[bold]{row['recipe']}[/bold]: {row['for']}", highlight=False)
    return 0
