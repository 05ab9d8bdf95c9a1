"""The benchmarks (bench/, not run by make test) still import what cnnlab offers: a rename in src/
must not leave a benchmark broken until someone runs it."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _cnnlab_names(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from cnnlab... import name`` in a script, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnnlab":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "cnnlab"]
    return found


def test_every_benchmark_imports_names_that_exist() -> None:
    missing = []
    for path in sorted(BENCH.glob("*.py")):
        for module, name in _cnnlab_names(path):
            try:
                imported = importlib.import_module(module)
            except ImportError as exc:
                missing.append(f"{path.name}: {module} ({exc})")
                continue
            if name and not hasattr(imported, name):
                try:
                    importlib.import_module(f"{module}.{name}")  # a submodule
                except ImportError:
                    missing.append(f"{path.name}: {module}.{name}")
    assert not missing, "\n".join(missing)
