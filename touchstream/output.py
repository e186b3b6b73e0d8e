"""Query results for people and for programs: table, vertical, CSV, TSV, JSON lines.

Pure: (column names, rows) in, text out. Both sinks' values are rendered alike: a
server gives datetimes and Decimals, chdb gives ClickHouse's JSON text; either way a
DateTime prints as ``2024-03-20 12:00:00``, a Decimal as its digits, NULL as ``NULL``
(``\\N`` in TSV, empty in CSV, ``null`` in JSON), as ClickHouse's own formats do.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

FORMATS = ("table", "vertical", "csv", "tsv", "json")


def text(v: Any, null: str = "NULL") -> str:
    """A value as ClickHouse prints it in a text format."""
    if v is None:
        return null
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, list | tuple):
        return json.dumps([_json_value(x) for x in v], default=str, ensure_ascii=False)
    return str(v)


def _json_value(v: Any) -> Any:
    if isinstance(v, datetime | date):
        return text(v)
    if isinstance(v, Decimal):
        # a JSON number while a float holds it exactly, else its digits as a string
        return float(v) if len(v.as_tuple().digits) <= 15 else str(v)
    if isinstance(v, list | tuple):
        return [_json_value(x) for x in v]
    return v


def as_json_lines(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """One JSON object per row (JSON lines, like ClickHouse's JSONEachRow)."""
    return "".join(
        json.dumps(dict(zip(cols, (_json_value(v) for v in r), strict=True)), ensure_ascii=False)
        + "\n"
        for r in rows
    )


def as_csv(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in rows:
        w.writerow([text(v, null="") for v in r])
    return buf.getvalue()


def _tsv(s: str) -> str:
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def as_tsv(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["\t".join(_tsv(c) for c in cols)]
    lines += ["\t".join("\\N" if v is None else _tsv(text(v)) for v in r) for r in rows]
    return "\n".join(lines) + "\n"


def as_vertical(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Each row as ``column: value`` lines, like ClickHouse's Vertical format."""
    width = max((len(c) for c in cols), default=0)
    out = []
    for i, r in enumerate(rows, 1):
        head = f"Row {i}:"
        out += [head, "─" * len(head)]
        out += [f"{c + ':':<{width + 1}} {text(v)}" for c, v in zip(cols, r, strict=True)]
        out.append("")
    return "\n".join(out)


def as_plain_table(cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned table as wide as its content: nothing cut, nothing wrapped (for pipes
    and files). Numbers are right-aligned."""
    cells = [[text(v) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(cols)]
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float | Decimal) or r[i] is None for r in rows)
        for i in range(len(cols))
    ]

    def line(values: Sequence[str]) -> str:
        return " │ ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "─┼─".join("─" * w for w in widths)
    return "\n".join([line(cols), rule, *(line(r) for r in cells)]) + "\n"


def table_fits(cols: Sequence[str], rows: Sequence[Sequence[Any]], width: int) -> bool:
    """Whether a boxed table shows every header whole within ``width`` columns (each
    column at least as wide as its header or its longest value up to 12 characters)."""
    need = 1
    for i, c in enumerate(cols):
        longest = max((len(text(r[i])) for r in rows), default=0)
        need += max(len(c), min(longest, 12)) + 3
    return need <= width


def render(fmt: str, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Every format but the terminal table (the CLI draws that with rich)."""
    if fmt == "csv":
        return as_csv(cols, rows)
    if fmt == "tsv":
        return as_tsv(cols, rows)
    if fmt == "json":
        return as_json_lines(cols, rows)
    if fmt == "vertical":
        return as_vertical(cols, rows)
    if fmt == "table":
        return as_plain_table(cols, rows)
    raise ValueError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
