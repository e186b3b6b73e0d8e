"""The DDL of the release before numbered migrations (tests/data/previous_release.sql, a
copy of what its sinks/tables.py created): tables, then views."""

from __future__ import annotations

import re
from pathlib import Path

SQL = Path(__file__).parent / "data" / "previous_release.sql"
_COLUMN = re.compile(r"^  `(\w+)` (.+?),?$", re.M)


def statements(db: str) -> list[str]:
    """Its CREATE statements for database ``db``, tables first, in order."""
    body = "\n".join(line for line in SQL.read_text().splitlines() if not line.startswith("--"))
    return [s.strip().replace("__DB__", db) for s in body.split("\n;\n") if s.strip()]


def tables() -> dict[str, list[tuple[str, str]]]:
    """Table name -> its (column, type) pairs, in order."""
    out = {}
    for sql in statements("db"):
        head = re.match(r"CREATE TABLE IF NOT EXISTS db\.(\w+) \(", sql)
        if head:
            cols = sql[head.end() : sql.index("\n) ENGINE")]
            out[head.group(1)] = _COLUMN.findall(cols)
    return out
