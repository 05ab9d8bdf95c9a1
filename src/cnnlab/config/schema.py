"""What each config field means and accepts, declared once, and the checks that follow from it.

A section field is declared with :func:`option`: its help text (with the unit), its bounds, and
its type annotation, which says what it holds: ``int``, ``float``, ``bool``, ``str``, a
``Literal[...]`` of allowed values, a ``tuple[float, float]`` range, or a ``tuple[str, ...]`` of
texts given one by one (a repeatable flag), each optionally
``| None``; a number may also take a few words (``float | Literal["auto"]``: ``--lr auto``). From
that one declaration come the command-line flag (``cnnlab.cli.options``), the
YAML key, the Python keyword, and the validation, so all of them accept the same values and
fail with the same message, which names the flag: ``--epochs must be at least 1, got 0``.

A command's own options (serve, export, prune, explain gradcam, ...) are declared the same way, in a
frozen dataclass deriving from :class:`CommandOptions`, kept in its package's light ``settings``
module: the CLI builds the flags from it and every front end creates it, which checks the values.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from cnnlab.errors import CnnlabError, suggest

POSITIONAL = "positional"  # ``flag=POSITIONAL``: the field is a command's positional argument


def option(
    default: Any,
    help: str,  # noqa: A002  argparse's name for it
    *,
    flag: str | None = None,
    dest: str | None = None,
    metavar: str | None = None,
    at_least: float | None = None,
    above: float | None = None,
    at_most: float | None = None,
    below: float | None = None,
) -> Any:
    """A dataclass field with the facts the CLI, YAML and validation share.

    Args:
        default: the default value (immutable).
        help: what it does, with its unit; the default is appended where it is shown.
        flag: the command-line flag when it is not ``--<field-name>``, or POSITIONAL.
        dest: the Python keyword / flag destination when not the field name (e.g. ``model``).
        at_least, above, at_most, below: inclusive and exclusive bounds of a number.
    """
    bounds = {"at_least": at_least, "above": above, "at_most": at_most, "below": below}
    return dataclasses.field(
        default=default, metadata={"help": help, "flag": flag, "dest": dest, "metavar": metavar, "bounds": bounds}
    )


@dataclass(frozen=True)
class FieldSpec:
    """One config field as every front end sees it."""

    section: str | None  # "data", "train", ...; None for a top-level RunConfig field
    name: str
    kind: str  # bool | int | float | str | choice | pair | list
    choices: tuple[Any, ...] | None  # allowed values of a Literal field; the words an int/float field also takes
    optional: bool  # None is allowed
    default: Any
    help: str
    flag: str  # "--epochs"; the metavar of a positional field (e.g. "DATA")
    dest: str  # the flat name: Python keyword and argparse destination
    metavar: str | None
    bounds: dict[str, float | None]

    @property
    def key(self) -> str:
        """The YAML path, e.g. ``train.epochs``."""
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def positional(self) -> bool:
        return not self.flag.startswith("--")


def _kind_of(hint: Any) -> tuple[str, tuple[Any, ...] | None, bool]:
    """(kind, allowed values, optional) from a resolved type annotation."""
    optional = False
    if get_origin(hint) in (Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        optional = len(members) < len(get_args(hint))
        words = [a for a in members if get_origin(a) is Literal]
        if len(members) == 2 and len(words) == 1 and members[0] in (int, float):
            return members[0].__name__, get_args(words[0]), optional  # a number or a word: --lr auto
        if len(members) != 1:
            raise TypeError(f"config fields hold one type (or None), got {hint}")
        hint = members[0]
    if get_origin(hint) is Literal:
        return "choice", get_args(hint), optional
    if get_origin(hint) is tuple:
        return ("list" if get_args(hint)[1:] == (Ellipsis,) else "pair"), None, optional
    for kind in (bool, int, float, str):
        if hint is kind:
            return kind.__name__, None, optional
    raise TypeError(f"unsupported config field type {hint}")


@functools.cache
def field_specs(cls: type, section: str | None) -> tuple[FieldSpec, ...]:
    """The FieldSpecs of a config dataclass, in declaration order (cached)."""
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue  # a nested section, not an option
        kind, choices, optional = _kind_of(hints[f.name])
        meta = f.metadata
        dest = meta["dest"] or f.name
        flag = meta["flag"] or "--" + dest.replace("_", "-")
        if flag == POSITIONAL:
            flag = dest.upper()
        specs.append(
            FieldSpec(
                section,
                f.name,
                kind,
                choices,
                optional,
                f.default,
                meta["help"],
                flag,
                dest,
                meta["metavar"],
                meta["bounds"],
            )
        )
    return tuple(specs)


def _number_text(value: float) -> str:
    return f"{value:g}"


def _bounds_error(spec: FieldSpec, value: float) -> str | None:
    """The complaint about ``value`` breaking the field's bounds, or None."""
    b = spec.bounds
    low_ok = (b["at_least"] is None or value >= b["at_least"]) and (b["above"] is None or value > b["above"])
    high_ok = (b["at_most"] is None or value <= b["at_most"]) and (b["below"] is None or value < b["below"])
    if low_ok and high_ok:
        return None
    low = b["at_least"] if b["at_least"] is not None else b["above"]
    high = b["at_most"] if b["at_most"] is not None else b["below"]
    if low is not None and high is not None and b["above"] is not None and b["below"] is not None:
        rule = f"between {_number_text(low)} and {_number_text(high)} (exclusive)"
    elif low is not None and high is not None:
        lo_text = _number_text(low) if b["at_least"] is not None else f"above {_number_text(low)}"
        hi_text = _number_text(high) if b["at_most"] is not None else f"below {_number_text(high)}"
        rule = f"between {lo_text} and {hi_text}"
    elif low is not None:
        rule = f"at least {_number_text(low)}" if b["at_least"] is not None else f"greater than {_number_text(low)}"
    else:
        assert high is not None  # a bound was broken, so there is one
        rule = f"at most {_number_text(high)}" if b["at_most"] is not None else f"below {_number_text(high)}"
    return f"{spec.flag} must be {rule}, got {_number_text(value)}"


def coerce(spec: FieldSpec, value: Any) -> Any:
    """``value`` checked against ``spec`` and in its canonical type (YAML lists become tuples).

    Raises:
        CnnlabError: naming the flag, what it takes, and what it got.
    """
    if value is None or (spec.optional and isinstance(value, str) and value.strip().lower() == "none"):
        if spec.optional:
            return None
        raise CnnlabError(f"{spec.flag} needs a value; it has no 'none'")
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise CnnlabError(f"{spec.flag} must be true or false, got {value!r}")
        return value
    if kind == "choice":
        allowed = spec.choices or ()
        match = next((c for c in allowed if c == value or str(c) == str(value)), None)
        if match is None:
            shown = ", ".join(map(str, allowed)) + (" or none" if spec.optional else "")
            hint = suggest(str(value), map(str, allowed))
            raise CnnlabError(f"{spec.flag} must be one of {shown}, got {value!r}{hint}")
        return match
    if kind == "str":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise CnnlabError(f"{spec.flag} must be text, got {value!r}")
        return str(value)  # YAML reads "val_split: 0.1" and "devices: 2" as numbers
    if kind == "list":
        if isinstance(value, str):  # one text given alone, not a list of characters
            value = (value,)
        if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
            raise CnnlabError(f"{spec.flag} takes texts (the flag once per value), got {value!r}")
        return tuple(value)
    if kind == "pair":
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise CnnlabError(f"{spec.flag} takes two numbers LO HI (e.g. 0.8 1.2), got {value!r}")
        return tuple(_number(spec, v, float) for v in value)
    if spec.choices and isinstance(value, str) and value.strip().lower() in spec.choices:
        return value.strip().lower()  # a number field's word, e.g. --lr auto
    return _number(spec, value, int if kind == "int" else float)


def _number(spec: FieldSpec, value: Any, kind: type) -> Any:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and math.isnan(value))
    ):
        what = "a whole number" if kind is int else "a number"
        if spec.choices:
            what += " or " + " or ".join(map(str, spec.choices))
        raise CnnlabError(f"{spec.flag} must be {what}, got {value!r}")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise CnnlabError(f"{spec.flag} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    problem = _bounds_error(spec, value)
    if problem:
        raise CnnlabError(problem)
    return value


def check_fields(instance: Any, section: str | None) -> None:
    """Checks and normalises every option field of a frozen dataclass, in place (``__post_init__``)."""
    cls: type = type(instance)
    for spec in field_specs(cls, section):
        object.__setattr__(instance, spec.name, coerce(spec, getattr(instance, spec.name)))


def spec_of(cls: type, section: str | None, name: str) -> FieldSpec:
    """The FieldSpec of field ``name`` (for messages about one field)."""
    return next(s for s in field_specs(cls, section) if s.name == name)


def command_specs(options: type) -> tuple[FieldSpec, ...]:
    """The FieldSpecs of a command's own options (a ``CommandOptions`` dataclass), in declaration order."""
    return field_specs(options, None)


class CommandOptions:
    """Base of a command's own options: a frozen dataclass of :func:`option` fields, checked when created.

    ``ExportOptions(tolerance=-1)`` raises the ``CnnlabError`` the CLI prints for ``--tolerance -1``.
    """

    def __post_init__(self) -> None:
        check_fields(self, None)

    @classmethod
    def of(cls, options: dict[str, Any], command: str) -> Any:
        """The options of ``command`` from keywords (a Python call), with a hint for a mistyped name.

        A keyword given as None for an option that takes no None keeps its default, as a flag not typed.

        Raises:
            CnnlabError: an unknown keyword, or a value the flag would refuse.
        """
        specs = {spec.name: spec for spec in command_specs(cls)}
        for name in options:
            if name not in specs:
                raise CnnlabError(f"unknown option '{name}'{suggest(name, specs, f'see cnnlab {command} --help')}")
        given = {name: v for name, v in options.items() if v is not None or specs[name].optional}
        # A path is text to a flag: Path("key.txt") is what --api-key-file key.txt gives.
        return cls(**{name: str(v) if isinstance(v, os.PathLike) else v for name, v in given.items()})
