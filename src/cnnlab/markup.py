"""Small HTML builders (the run report, tables and notebook summaries): every value escaped, tables
with numeric columns aligned."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


def escape(value: Any) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Iterable[int] = ()) -> str:
    """An escaped HTML table; columns listed in ``numeric`` are right-aligned."""
    numeric = set(numeric)
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{escape(v)}</td>" for i, v in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column key/value table, keys as row headers."""
    body = "".join(f'<tr><th scope="row">{escape(k)}</th><td>{escape(v)}</td></tr>' for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def folded(title: str, body: str) -> str:
    return f"<details><summary>{escape(title)}</summary>{body}</details>"


def missing(what: str) -> str:
    return f'<p class="missing">{escape(what)} not available (the run may have been interrupted).</p>'
