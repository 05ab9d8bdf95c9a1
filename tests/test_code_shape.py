"""The shape of the code a newcomer reads (issue 28): short functions, and module names that say one thing."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import cnnlab

ROOT = Path(cnnlab.__file__).parent
MAX_FUNCTION_LINES = 60  # a function longer than a screen is split into named steps
# Endings that make another word of the same concept: stages/staged, prune/pruning, pack/packed.
INFLECTIONS = ("s", "d", "ed", "ing", "er", "ion")


def _long_functions() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1  # nested functions count in their parent
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def _stems(name: str) -> set[str]:
    """The name and what it could be an inflection of: ``staged`` -> staged, stage, stag."""
    stems = {name}
    for ending in INFLECTIONS:
        if name.endswith(ending) and len(name) - len(ending) >= 4:
            stem = name[: -len(ending)]
            stems |= {stem, stem + "e"}  # pruning -> prun(e)
    return stems


def _look_alike(first: str, second: str) -> bool:
    """``distill`` and ``distill_module``, ``budget`` and ``time_budget``, ``stages`` and ``staged``."""
    short, long = sorted((first, second), key=len)
    return long.startswith(short + "_") or long.endswith("_" + short) or bool(_stems(short) & _stems(long))


def test_no_function_is_longer_than_a_screen() -> None:
    assert not _long_functions(), "split into named steps:\n" + "\n".join(_long_functions())


def test_no_two_modules_of_a_package_differ_only_by_an_ending() -> None:
    pairs = []
    for package in sorted({p.parent for p in ROOT.rglob("*.py")}):
        names = sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")
        pairs += [
            f"{package.relative_to(ROOT.parent)}: {a} / {b}"
            for a, b in itertools.combinations(names, 2)
            if _look_alike(a, b)
        ]
    assert not pairs, "one module per concept, named for it:\n" + "\n".join(pairs)


def test_the_look_alike_rule_catches_what_issue_28_named() -> None:
    for a, b in [
        ("stages", "staged"),
        ("budget", "time_budget"),
        ("prune", "pruning"),
        ("distill", "distill_module"),
        ("pack", "packed"),
    ]:
        assert _look_alike(a, b), (a, b)
    for a, b in [("stage_plan", "stage_fit"), ("prune_run", "prune_network"), ("splits", "split_records")]:
        assert not _look_alike(a, b), (a, b)
