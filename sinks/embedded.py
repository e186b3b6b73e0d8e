"""Embedded ClickHouse (chdb) persisted to a directory: the default for demos.

chdb allows one data directory per process at a time. Rows go in as Arrow tables
(``INSERT ... SELECT * FROM Python(tbl)``), so values never enter the SQL text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import orjson
import pyarrow as pa

from sinks.base import Row, Sink, SinkUnavailable
from sinks.errors import classify
from sinks.tables import BY_NAME

_SIMPLE = {
    "String": pa.string(),
    "UInt8": pa.uint8(),
    "UInt16": pa.uint16(),
    "UInt32": pa.uint32(),
    "UInt64": pa.uint64(),
    "Int32": pa.int32(),
    "Float64": pa.float64(),
    "Date": pa.date32(),
}


def arrow_type(ch_type: str) -> pa.DataType:
    m = re.fullmatch(r"Nullable\((.*)\)", ch_type)
    if m:
        return arrow_type(m.group(1))
    if ch_type in _SIMPLE:
        return _SIMPLE[ch_type]
    if ch_type.startswith("DateTime"):
        return pa.timestamp("ms", tz="UTC")
    m = re.fullmatch(r"Decimal\((\d+),\s*(\d+)\)", ch_type)
    if m:
        return pa.decimal128(int(m.group(1)), int(m.group(2)))
    raise ValueError(f"no Arrow type for ClickHouse type {ch_type}")


_SCHEMAS = {
    t.name: pa.schema([(c, arrow_type(ty)) for c, ty in t.columns]) for t in BY_NAME.values()
}


class ChdbSink(Sink):
    """``chdb://PATH`` (relative or absolute), optional ``?database=NAME``."""

    def __init__(self, url: str) -> None:
        rest = url.removeprefix("chdb://")
        path, _, query = rest.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        self.database = params.get("database", "touchstream")
        self.path = Path(path or "var/chdb")
        self.url_for_humans = f"chdb://{self.path}"
        self.path.mkdir(parents=True, exist_ok=True)
        from chdb import session  # imported late: loading the engine takes a moment

        try:
            self.session = session.Session(str(self.path))
        except Exception as e:  # chdb raises plain exceptions
            raise SinkUnavailable(
                f"cannot open embedded ClickHouse at {self.path}: {e}. "
                "Another process may hold it (chdb allows one directory per process)."
            ) from e
        # 64-bit integers as JSON numbers, not strings, in every result of this session.
        self.session.query("SET output_format_json_quote_64bit_integers = 0")

    def execute(self, sql: str) -> None:
        try:
            self.session.query(sql)
        except Exception as e:
            raise classify(e) from e

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        schema = _SCHEMAS[table]
        columns = list(zip(*rows, strict=True))
        try:
            tbl = pa.table(  # noqa: F841 - chdb's Python() table function finds it by name
                [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
                schema=schema,
            )
            cols = ", ".join(f"`{c}`" for c in schema.names)
            self.session.query(
                f"INSERT INTO {self.database}.{table} ({cols}) SELECT * FROM Python(tbl)"
            )
        except Exception as e:
            raise classify(e) from e

    def query(self, sql: str) -> tuple[list[str], list[Row]]:
        # JSONCompact keeps ClickHouse's own rendering of dates and decimals. The SQL is
        # run as given (its settings are the session's, set once when it opened).
        try:
            res = self.session.query(sql, "JSONCompact")
        except Exception as e:
            raise classify(e) from e
        raw = res.bytes() if res is not None else b""
        if not raw:
            return [], []
        doc = orjson.loads(raw)
        return [m["name"] for m in doc["meta"]], [tuple(r) for r in doc["data"]]

    def query_formatted(self, sql: str) -> bytes:
        """The engine's own output of a query that names its FORMAT."""
        res = self.session.query(sql, "TabSeparated")  # the query's FORMAT clause wins
        return res.bytes() if res is not None else b""

    def close(self) -> None:
        self.session.close()
