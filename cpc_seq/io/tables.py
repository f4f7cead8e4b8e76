"""The one markdown table printer for probe results (every modality's ``result.json``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

Row = Mapping[str, Any]
Column = tuple[str, Callable[[Row], str]]


def pct(key: str, digits: int = 1) -> Callable[[Row], str]:
    """A column cell: ``row[key]`` (a fraction) as a percentage, ``-`` when missing."""
    def cell(row: Row) -> str:
        value = row.get(key)
        return "-" if value is None else f"{100 * float(value):.{digits}f} %"
    return cell


def field(key: str, default: str = "?") -> Callable[[Row], str]:
    """A column cell: ``row[key]`` as text."""
    return lambda row: str(row.get(key, default))


#: features | task | dim | test accuracy | train accuracy (the default probe table).
PROBE_COLUMNS: tuple[Column, ...] = (
    ("features", field("name")),
    ("task", lambda r: f"{r.get('task', '?')} ({r.get('probe', 'linear')})"),
    ("dim", field("feature_dim")),
    ("test accuracy", pct("accuracy")),
    ("train accuracy", pct("train_accuracy")),
)


def markdown_table(rows: Sequence[Row], columns: Sequence[Column], title: str = "",
                   footer: Sequence[str] = ()) -> str:
    """Rows as a markdown table with ``columns`` (header, cell function); an optional
    ``title`` line above and ``footer`` lines below."""
    lines = [f"{title}\n"] if title else []
    lines.append("| " + " | ".join(h for h, _ in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    for row in rows:
        lines.append("| " + " | ".join(cell(row) for _, cell in columns) + " |")
    lines.extend(footer)
    return "\n".join(lines) + "\n"


def probe_table(rows: Sequence[Row], title: str = "") -> str:
    """The default probe table (:data:`PROBE_COLUMNS`)."""
    return markdown_table(rows, PROBE_COLUMNS, title=title)


def read_results(paths: Sequence[str], require: str = "", what: str = "probe result"
                 ) -> list[dict[str, Any]]:
    """Read ``result.json`` files; a missing or malformed file (or one without the key
    ``require``) is a one-line :class:`~cpc_seq.errors.DataError` naming it."""
    import json
    from pathlib import Path

    from cpc_seq.errors import DataError

    rows = []
    for path in paths:
        try:
            row = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: cannot read {what} ({e})") from None
        if not isinstance(row, dict) or (require and require not in row):
            raise DataError(f"{path}: not a {what}" + (f" (no {require!r})" if require else ""))
        rows.append(row)
    return rows
