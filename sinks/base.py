"""The sink interface: what the worker and the CLI need from a ClickHouse.

Two implementations share it and the DDL in sinks/tables.py:
``ClickHouseSink`` (a server, through clickhouse-driver's native protocol) and
``ChdbSink`` (embedded ClickHouse in process). Rows are tuples in the column order of
the table; values are str, int, float, Decimal, aware datetime or None. A DateTime
column also takes an int: milliseconds since the epoch (the worker's rows use that: no
datetime object per value on either side).

``BatchingWriter`` sits in front of a sink: it collects rows per table and writes each
table's rows in one insert per flush (like Quix Streams' BatchingSink).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from sinks.tables import BY_NAME, TABLES, migrations

Row = tuple[Any, ...]


class SinkUnavailable(RuntimeError):
    """ClickHouse cannot be reached or opened; the message says which and how."""


class Sink(ABC):
    database: str

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one DDL statement."""

    @abstractmethod
    def insert(self, table: str, rows: Sequence[Row]) -> None:
        """Insert rows into one of the tables of sinks/tables.py, all columns, in order."""

    @abstractmethod
    def query(self, sql: str) -> tuple[list[str], list[Row]]:
        """Run a read query: (column names, rows)."""

    def close(self) -> None:  # noqa: B027 - optional for sinks holding nothing
        """Release the connection."""

    def migrate(self, segment_map: Sequence[Sequence[str]] | None = None) -> list[str]:
        """Create the database and tables if missing, (re)create the views. Safe to run
        again. ``segment_map``: a 5x5 R/F segment map for customer_scores (docs/scoring.md)."""
        statements = migrations(self.database, segment_map)
        for sql in statements:
            self.execute(sql)
        added = [sql for sql in self.missing_columns() if not self.execute(sql)]
        return statements + added

    def missing_columns(self) -> list[str]:
        """ALTER statements adding the columns a table made by an earlier release lacks
        (CREATE TABLE IF NOT EXISTS leaves an existing table as it was; 18.16 has no
        ADD COLUMN IF NOT EXISTS). New columns are only ever appended."""
        _, rows = self.query(
            f"SELECT table, name FROM system.columns WHERE database = '{self.database}'")
        have: dict[str, set[str]] = {}
        for table, name in rows:
            have.setdefault(table, set()).add(name)
        return [
            f"ALTER TABLE {self.database}.{t.name} ADD COLUMN `{c}` {ctype}"
            for t in TABLES if t.name in have
            for c, ctype in t.columns if c not in have[t.name]
        ]

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BatchingWriter:
    """Collects rows per table; ``flush`` writes each table once and empties the buffer."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self._rows: dict[str, list[Row]] = {}
        self.rows_written = 0

    def add(self, table: str, rows: Sequence[Row]) -> None:
        if table not in BY_NAME:
            raise KeyError(f"unknown table {table!r}")
        if rows:
            self._rows.setdefault(table, []).extend(rows)

    @property
    def pending(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def flush(self) -> int:
        """Write everything buffered. If an insert fails, the tables not yet written stay
        buffered, so calling flush again resumes (rows are versioned: a rewrite is safe)."""
        written = 0
        for table in list(self._rows):
            rows = self._rows[table]
            self.sink.insert(table, rows)
            del self._rows[table]
            written += len(rows)
        self.rows_written += written
        return written
