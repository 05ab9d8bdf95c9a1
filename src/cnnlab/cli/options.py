"""Command-line flags generated from the config schema: one flag per config field, nothing retyped.

Every generated flag defaults to ``argparse.SUPPRESS``, so ``given_options(args)`` holds exactly
the flags the user typed; the values are checked where every front end's are, when the
config is built (``cnnlab.config.build_config``). A command's own options (``CommandOptions``:
serve, export, prune, explain ...) get their flags the same way (``add_command_options``) and are
checked when ``command_options`` creates them, as the Python API does.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from cnnlab.config import PRESETS, FieldSpec, recipe_names
from cnnlab.config.schema import CommandOptions, command_specs

CommandOptionsT = TypeVar("CommandOptionsT", bound=CommandOptions)

GROUP_TITLES = {
    None: "run",
    "data": "data",
    "model": "model",
    "train": "training",
    "transfer": "transfer learning (with --pretrained or --weights)",
    "augment": "augmentation (defaults come from --augment's preset)",
}


def _parse_value(kind: str, optional: bool, words: tuple[Any, ...] = ()) -> Callable[[str], Any]:
    """argparse ``type`` for a field kind; ``none`` means None for fields that allow it, and a
    number field's words (``auto``) stay words."""
    convert = {"int": int, "float": float}.get(kind, str)

    def parse(text: str) -> Any:
        if optional and text.strip().lower() == "none":
            return None
        if text.strip().lower() in words:
            return text.strip().lower()
        return convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in "invalid int value: 'x'"
    return parse


def _help(spec: FieldSpec) -> str:
    """The field's help, with its default (unless the text already says what the default is)."""
    text = spec.help
    if "default" in text or spec.default is None:
        return text
    if spec.kind == "bool":
        return f"{text} (default: {'on' if spec.default else 'off'})"
    return f"{text} (default: {spec.default})"


def add_option(
    parser: argparse._ActionsContainer,
    spec: FieldSpec,
    positional_nargs: str | None = None,
    argparse_choices: bool = True,
) -> None:
    """Adds the flag (or positional argument) of one config field.

    ``argparse_choices=False`` leaves a choice to the field's own check (``CommandOptions``), so a
    wrong word gets the message the Python API gives.
    """
    if spec.positional:
        parser.add_argument(spec.dest, metavar=spec.flag, nargs=positional_nargs, default=None, help=_help(spec))
        return
    common: dict[str, Any] = {"dest": spec.dest, "default": argparse.SUPPRESS, "help": _help(spec)}
    if spec.kind == "bool":
        parser.add_argument(spec.flag, action=argparse.BooleanOptionalAction, **common)
    elif spec.kind == "pair":
        parser.add_argument(spec.flag, nargs=2, type=float, metavar=("LO", "HI"), **common)
    elif spec.kind == "list":
        parser.add_argument(spec.flag, action="append", metavar=spec.metavar or spec.dest.upper(), **common)
    elif spec.kind == "choice":
        choices = [str(c) for c in spec.choices or ()] + (["none"] if spec.optional else [])
        if argparse_choices:
            parser.add_argument(spec.flag, choices=choices, **common)
        else:
            parser.add_argument(spec.flag, metavar="{" + ",".join(choices) + "}", **common)
    else:
        metavar = spec.metavar or {"int": "N", "float": "X"}.get(spec.kind, spec.dest.upper())
        words = tuple(spec.choices or ()) if spec.kind in ("int", "float") else ()
        if words and not spec.metavar:
            metavar = "|".join([metavar, *map(str, words)])
        parser.add_argument(spec.flag, type=_parse_value(spec.kind, spec.optional, words), metavar=metavar, **common)


def add_options(
    parser: argparse.ArgumentParser, specs: Iterable[FieldSpec], positional_nargs: str | None = None
) -> None:
    """Adds the flags of ``specs``, grouped by config section as in ``--help``."""
    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for spec in specs:
        if spec.positional:
            add_option(parser, spec, positional_nargs)
            continue
        if spec.section not in groups:
            groups[spec.section] = parser.add_argument_group(GROUP_TITLES[spec.section])
        add_option(groups[spec.section], spec)


def given_options(args: argparse.Namespace, specs: Iterable[FieldSpec]) -> dict[str, Any]:
    """The options typed on the command line, by flat name (absent flags are left out)."""
    values = vars(args)
    out = {}
    for spec in specs:
        if spec.dest in values and not (spec.positional and values[spec.dest] is None):
            value = values[spec.dest]
            out[spec.dest] = None if spec.kind == "choice" and spec.optional and value == "none" else value
    return out


def add_command_options(
    parser: argparse._ActionsContainer,
    options: type[CommandOptions],
    only: Iterable[str] | None = None,
    leave_out: Iterable[str] = (),
) -> None:
    """Adds the flags of a command's own options: ``options``' fields (or those named in ``only``) but ``leave_out``."""
    wanted = None if only is None else set(only)
    for spec in command_specs(options):
        if (wanted is None or spec.name in wanted) and spec.name not in leave_out:
            add_option(parser, spec, argparse_choices=False)


def command_options(args: argparse.Namespace, options: type[CommandOptionsT]) -> CommandOptionsT:
    """The command's options from the flags typed (the rest keep their defaults), checked.

    Raises:
        CnnlabError: a value out of range or not allowed, in the words the Python API uses.
    """
    return options(**given_options(args, command_specs(options)))


def add_setup_arguments(parser: argparse.ArgumentParser, preset_default: str = "none") -> None:
    """``--recipe``, ``--config`` and ``--augment``: whole setups that single options refine."""
    group = parser.add_argument_group("setups (defaults, then --recipe, --config, --augment, then single options)")
    group.add_argument("--recipe", choices=recipe_names(), default=None, help="a named setup (cnnlab recipes list)")
    group.add_argument("--config", metavar="YAML", default=None, help="YAML file of options (flags override it)")
    group.add_argument(
        "--augment", choices=list(PRESETS), default=None, help=f"augmentation preset (default: {preset_default})"
    )
