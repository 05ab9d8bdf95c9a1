"""Imports run one way: config -> data -> augment -> models -> training -> explain -> evaluation ->
(deploy, comparison, cleaning, tuning) -> serve -> api -> cli. A package imports only the layers below it,
at any depth of the module (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import cnnlab

ROOT = Path(cnnlab.__file__).parent
# Utilities sit at the bottom with config: any layer may use them, they use nothing above errors.
LAYERS = {
    "errors": 0,
    "io": 0,
    "version": 0,
    "machine": 0,
    "markup": 0,
    "collector": 0,
    "aside": 2,  # above threads: a forked helper leaves the parent the cores it does not take
    "figures": 1,
    "progress": 1,
    "phases": 1,
    "tables": 1,
    "threads": 1,
    "config": 1,
    # explain sits below evaluation: the run report shows Grad-CAM on the test images it scores.
    "data": 2,
    "augment": 3,
    "models": 4,
    "training": 5,
    "explain": 6,
    "evaluation": 7,
    "deploy": 8,
    "comparison": 8,
    "cleaning": 8,
    "tuning": 8,
    "serving": 9,
    "api": 10,
    "__init__": 11,
    "cli": 12,
    "__main__": 13,
}


def _layer(module: str) -> str:
    """``cnnlab.training.run_fit`` -> ``training``; ``cnnlab`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return [n for n in names if n == "cnnlab" or n.startswith("cnnlab.")]


def test_every_import_goes_down_the_layers() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        own = relative.parts[0]
        assert own in LAYERS, f"{relative}: a package the layer list does not know; add it to LAYERS"
        for name in _imports(path):
            target = _layer(name)
            if name == "cnnlab" and own != "__main__":
                wrong.append(f"{relative} imports the top-level package")
            elif target != own and LAYERS[target] >= LAYERS[own]:
                wrong.append(f"{relative} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_config_imports_nothing_of_cnnlab_but_errors() -> None:
    for path in (ROOT / "config").rglob("*.py"):
        assert {_layer(n) for n in _imports(path)} <= {"config", "errors"}, path
