"""The sink interface: what the worker and the CLI need from a ClickHouse.

Two implementations share it and the DDL in sinks/tables.py:
``ClickHouseSink`` (a server, through clickhouse-driver's native protocol) and
``ChdbSink`` (embedded ClickHouse in process). Rows are tuples in the column order of
the table; values are str, int, float, Decimal, aware datetime or None. A DateTime
column also takes an int: milliseconds since the epoch (the worker's rows use that: no
datetime object per value on either side).

A failed call raises one of sinks/errors.py's kinds: ``SinkTransient`` (retry later),
``RowsRefused`` (some rows' values are refused) or ``SinkFatal`` (configuration: stop).

``BatchingWriter`` sits in front of a sink: it collects rows per table and writes each
table's rows in one insert per flush (like Quix Streams' BatchingSink), split only where
one insert would touch more partitions than a server takes. Rows a server refuses are
found by halving the insert and go to ``dead_letters`` instead; the others are written.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sinks.errors import RowsRefused, SinkError, classify
from sinks.tables import BY_NAME, TABLES, Capabilities, Cluster, on_cluster

Row = tuple[Any, ...]
log = logging.getLogger("touchstream.sinks")

# Current servers refuse an insert block touching more partitions than this (setting
# max_partitions_per_insert_block, Code 252); 18.16 has no such limit. Split, not set:
# 18.16's driver silently drops a setting it does not know.
MAX_PARTITIONS_PER_INSERT = 100


class SinkUnavailable(RuntimeError):
    """ClickHouse cannot be reached or opened; the message says which and how."""


class Sink(ABC):
    database: str
    # The cluster of the server's remote_servers config that the DDL runs ON CLUSTER and
    # the Distributed tables span; "" for one server (docs/operations.md).
    cluster: str = ""

    def cluster_mode(self) -> Cluster | None:
        return Cluster(self.cluster) if self.cluster else None

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

    def migrate(
        self,
        segment_map: Sequence[Sequence[str]] | None = None,
        ttl_days: Mapping[str, int] | None = None,
    ) -> list[str]:
        """Apply the pending numbered migrations (sinks/migrations.py), recording each,
        then create or replace the views. Safe to run again, also by several processes
        at once. ``segment_map``: a 5x5 R/F segment map for customer_scores
        (docs/scoring.md); ``ttl_days``: table name -> days its TTL keeps rows
        (Settings.ttl_days; the description's defaults otherwise). Returns the
        statements applied."""
        from sinks.migrations import migrate

        return migrate(self, segment_map, ttl_days)

    def catalog(self, sql: str) -> tuple[list[str], list[Row]]:
        """A query of system.tables or system.columns. ClickHouse 18.16 fails one when a
        table it lists is dropped before it is read (another worker's temporary view, at
        start): the listing is read again."""
        for attempt in range(20):
            try:
                return self.query(sql)
            except Exception as e:
                if "doesn't exist" not in str(e) or attempt == 19:
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise AssertionError("unreachable")

    def server_version(self) -> tuple[int, ...]:
        _, rows = self.query("SELECT version()")
        return tuple(int(p) for p in re.findall(r"\d+", str(rows[0][0]))[:3])

    def capabilities(self) -> Capabilities:
        """What the server has beyond ClickHouse 18.16, by its version (not by sink
        class: a ClickHouseSink may reach an 18.16 or a current server)."""
        return Capabilities.of(self.server_version())

    def replaces_views(self) -> bool:
        """CREATE OR REPLACE VIEW exists from ClickHouse 19.5 on (chdb is current)."""
        return self.capabilities().replace_view

    def swap_views(self, defs: dict[str, str]) -> list[str]:
        """Views on a server without CREATE OR REPLACE VIEW (ClickHouse 18.16): each is
        created under a new name and compared with the one in place; an unchanged view
        stays as it is (so analysts' queries on it never fail because a worker started),
        a changed one is dropped and the new one renamed into its place at once."""
        db, applied = self.database, []
        _, rows = self.catalog(f"SELECT name FROM system.tables WHERE database = '{db}'")
        existing = {r[0] for r in rows}
        suffix = uuid.uuid4().hex[:8]
        on = on_cluster(self.cluster_mode())
        for name, select in defs.items():
            tmp = f"{name}__next_{suffix}"
            # The comparison needs the new view on this server only.
            self.execute(f"CREATE VIEW {db}.{tmp} AS\n{select}")
            try:
                if name in existing and self._definition(name) == self._definition(tmp).replace(
                    f"{db}.{tmp}", f"{db}.{name}", 1
                ):
                    if on:  # unchanged here; a server added since may lack it
                        self.execute(f"CREATE VIEW IF NOT EXISTS {db}.{name}{on} AS\n{select}")
                    continue
                if on:
                    self.execute(f"DROP TABLE IF EXISTS {db}.{tmp}")
                    self.execute(f"CREATE VIEW {db}.{tmp}{on} AS\n{select}")
                swap = [f"DROP TABLE IF EXISTS {db}.{name}{on}"] if name in existing else []
                swap.append(f"RENAME TABLE {db}.{tmp} TO {db}.{name}{on}")
                for sql in swap[:-1]:
                    self.execute(sql)
                try:
                    self.execute(swap[-1])
                except Exception:
                    # Another process swapped the same view in between: its view stands.
                    if not self._exists(name):
                        raise
                applied += swap
            finally:
                if self._exists(tmp):
                    self.execute(f"DROP TABLE IF EXISTS {db}.{tmp}{on}")
        return applied

    def _definition(self, name: str) -> str:
        return str(self.query(f"SHOW CREATE TABLE {self.database}.{name}")[1][0][0])

    def _exists(self, name: str) -> bool:
        _, rows = self.query(f"EXISTS TABLE {self.database}.{name}")
        return bool(rows and rows[0][0])

    def missing_columns(self) -> list[str]:
        """ALTER statements adding the columns that tables made by an earlier release
        lack (CREATE TABLE IF NOT EXISTS leaves an existing table as it was), whatever
        the recorded migrations say. ``migrate`` adds them: its steps, then its check."""
        from sinks.migrations import STEPS, Snapshot, plan, read_snapshot

        caps, cluster = self.capabilities(), self.cluster_mode()
        snap = read_snapshot(self, caps, cluster)
        present = Snapshot(
            snap.database, snap.tables, snap.ttls, frozenset(s.version for s in STEPS)
        )
        tables = [t for t in TABLES if t.name in snap.tables]
        todo = plan(self.database, present, caps, tables=tables, cluster=cluster)
        return [sql for sql in todo.statements if " ADD COLUMN " in sql]

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _month(v: Any) -> int:
    """The YYYYMM partition of a DateTime value (epoch ms or an aware datetime) as a
    month number."""
    if v.__class__ is int:
        t = time.gmtime(v // 1000)
        return t.tm_year * 12 + t.tm_mon - 1
    t = v.astimezone(UTC)
    return int(t.year * 12 + t.month - 1)


def insert_blocks(
    table: str, rows: Sequence[Row], limit: int = MAX_PARTITIONS_PER_INSERT
) -> list[Sequence[Row]]:
    """``rows`` as inserts of at most ``limit`` partitions each (one, unless a table
    partitioned by month gets rows of more months than that: a backfill). A month's rows
    stay in one insert, in their order."""
    column = BY_NAME[table].partition_column
    if column is None or len(rows) <= limit:
        return [rows]
    i = BY_NAME[table].column_names.index(column)
    values = [r[i] for r in rows]
    if (
        all(v.__class__ is int for v in values)
        and _month(max(values)) - _month(min(values)) < limit
    ):
        return [rows]  # the usual case: a few months at most
    months = [_month(v) for v in values]
    block_of = {m: n // limit for n, m in enumerate(sorted(set(months)))}
    blocks: list[list[Row]] = [[] for _ in range(max(block_of.values()) + 1)]
    for row, m in zip(rows, months, strict=True):
        blocks[block_of[m]].append(row)
    return list(blocks)


class BatchingWriter:
    """Collects rows per table; ``flush`` writes each table once and empties the buffer.

    A row the server refuses (``RowsRefused``) is isolated by halving the insert until
    only refused rows are left; each goes to ``dead_letters`` with the server's reason,
    its table and its key, and the other rows are written. ``clock`` dates those dead
    letters. ``on_insert(table, rows, seconds, error)`` is told of every insert, done
    (``error`` None) or failed (the error's kind), for the worker's metrics and health."""

    def __init__(
        self,
        sink: Sink,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_insert: Callable[[str, int, float, SinkError | None], None] | None = None,
    ) -> None:
        self.sink = sink
        self.clock = clock
        self.on_insert = on_insert
        self._rows: dict[str, list[Row]] = {}
        self.rows_written = 0
        self.rows_refused = 0
        # Per table, since the start: what /metrics reports.
        self.written_by_table: dict[str, int] = {}
        self.refused_by_table: dict[str, int] = {}

    def add(self, table: str, rows: Sequence[Row]) -> None:
        if table not in BY_NAME:
            raise KeyError(f"unknown table {table!r}")
        if rows:
            self._rows.setdefault(table, []).extend(rows)

    @property
    def pending(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def flush(self) -> int:
        """Write everything buffered; returns the rows written. If an insert fails with
        ``SinkTransient`` or ``SinkFatal`` (raised), the tables not yet written stay
        buffered, so calling flush again resumes (rows are versioned: a rewrite is safe)."""
        written = 0
        for table in list(self._rows):
            rows = self._rows[table]
            refused: list[tuple[Row, str]] = []
            for block in insert_blocks(table, rows):
                refused += self._insert(table, block)
            if refused:
                self._set_aside(table, refused)
            del self._rows[table]
            written += len(rows) - len(refused)
            by_table = self.written_by_table
            by_table[table] = by_table.get(table, 0) + len(rows) - len(refused)
        self.rows_written += written
        return written

    def _insert(self, table: str, rows: Sequence[Row]) -> list[tuple[Row, str]]:
        """Insert ``rows``; returns those refused, each with the server's reason."""
        start = time.perf_counter()
        try:
            self.sink.insert(table, rows)
            if self.on_insert is not None:
                self.on_insert(table, len(rows), time.perf_counter() - start, None)
            return []
        except Exception as e:
            err = classify(e)
            if self.on_insert is not None:
                self.on_insert(table, len(rows), time.perf_counter() - start, err)
            if not isinstance(err, RowsRefused):
                raise err from e
            if len(rows) == 1:
                return [(rows[0], str(err))]
        half = len(rows) // 2  # about log2(rows) inserts per refused row
        return self._insert(table, rows[:half]) + self._insert(table, rows[half:])

    def _set_aside(self, table: str, refused: list[tuple[Row, str]]) -> None:
        from sinks.rows import refused_row, row_key  # sinks.rows imports this module

        self.rows_refused += len(refused)
        by_table = self.refused_by_table
        by_table[table] = by_table.get(table, 0) + len(refused)
        for row, reason in refused:
            log.error(
                "ClickHouse refused the %s row %s; it goes to dead_letters: %s",
                table,
                row_key(table, row),
                reason,
            )
        if table == "dead_letters":
            log.error("dead letters refused by ClickHouse cannot be stored: %s", refused)
            return
        at = self.clock()
        lost = self._insert("dead_letters", [refused_row(table, r, why, at) for r, why in refused])
        written = self.written_by_table
        written["dead_letters"] = written.get("dead_letters", 0) + len(refused) - len(lost)
        if lost:
            log.error("dead letters refused by ClickHouse cannot be stored: %s", lost)


def one_line(e: BaseException) -> str:
    """A ClickHouse error (either sink) as one line: the server's whole message, without
    the stack trace 18.16 appends."""
    text = str(e) or repr(e)
    text = re.split(r"\.?\s*Stack trace:", text, maxsplit=1)[0]
    return " ".join(text.split())
