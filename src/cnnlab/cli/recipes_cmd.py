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
        parts.append("flip")
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


def recipe_rows() -> list[dict[str, str]]:
    """One row of display strings per recipe (what ``recipes list`` prints)."""
    from cnnlab.config import RECIPE_HELP, recipe_names, recipe_overrides

    rows = []
    for name in recipe_names():
        recipe = recipe_overrides(name)
        train, data, model = recipe.get("train", {}), recipe.get("data", {}), recipe.get("model", {})
        speed = [flag for flag, on in (("channels_last", train.get("channels_last")),
                                        ("compile", train.get("compile"))) if on]
        if train.get("precision", "auto") != "auto":
            speed.append(train["precision"])
        rows.append({
            "recipe": name,
            "model": model.get("name", "simple_cnn"),
            "optimizer": f"{train.get('optimizer', 'adam')} {train.get('lr', 1e-3):g}",
            "schedule": train.get("scheduler", "plateau"),
            "batch": str(data.get("batch_size", 128)),
            "epochs": str(train.get("epochs", 15)),
            "val": str(data.get("val_split", "0.1")),
            "augment": _augment_text(recipe.get("augment", {})),
            "speed": ", ".join(speed) or "-",
            "for": RECIPE_HELP.get(name, ""),
        })
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
    for column in rows[0]:
        table.add_column(column, overflow="fold", no_wrap=column in ("recipe", "model"))
    for row in rows:
        table.add_row(*row.values())
    console.print(table)
    return 0
