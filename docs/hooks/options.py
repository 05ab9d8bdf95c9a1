"""MkDocs hook: the options reference page's tables, generated from the config declarations at build time.

Every run option is declared once (``cnnlab.config``); the page shows each as its flag, YAML key and
Python keyword with its type, default and help, so it cannot drift from ``cnnlab train --help``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))  # the sources, not an installed copy

from cnnlab.config import all_options  # after the path

MARKER = "<!-- options -->"
TITLES = {None: "Run", "data": "Data", "model": "Model", "augment": "Augmentation", "train": "Training",
          "transfer": "Transfer learning"}


def _kind(spec: Any) -> str:
    if spec.kind == "choice":
        text = " \\| ".join(f"`{choice}`" for choice in spec.choices or ())
    elif spec.kind == "pair":
        text = "two numbers LO HI"
    else:
        text = spec.kind
    return text + (" or `none`" if spec.optional else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def options_tables() -> str:
    sections: dict[Any, list[str]] = {}
    for spec in all_options():
        flag = spec.flag if not spec.positional else f"`{spec.flag}` (positional)"
        row = (f"| {flag if spec.positional else f'`{flag}`'} | `{spec.key}` | `{spec.dest}=` | {_kind(spec)} | "
               f"`{spec.default!r}` | {_cell(spec.help)} |")
        sections.setdefault(spec.section, []).append(row)
    out = []
    for section, rows in sections.items():
        out += [f"## {TITLES.get(section, section)}", "",
                "| Flag | YAML key | Keyword | Takes | Default | What it does |", "|---|---|---|---|---|---|",
                *rows, ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    return markdown.replace(MARKER, options_tables()) if MARKER in markdown else markdown
