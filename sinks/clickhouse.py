"""A ClickHouse server through clickhouse-driver (native protocol, port 9000)."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import unquote, urlparse

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from sinks.base import Row, Sink, SinkUnavailable
from sinks.errors import SinkFatal, classify
from sinks.tables import BY_NAME

_DATETIMES = {
    t.name: [i for i, (_, ty) in enumerate(t.columns) if "DateTime" in ty]
    for t in BY_NAME.values()
}


class ClickHouseSink(Sink):
    """``clickhouse://user:password@host:9000/database``"""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        u = urlparse(url)
        self.database = (u.path or "/").strip("/") or "touchstream"
        self.host = u.hostname or "localhost"
        self.port = u.port or 9000
        self.url_for_humans = f"clickhouse://{self.host}:{self.port}/{self.database}"
        # The database may not exist yet (migrate creates it): connect to `default`.
        self.client = Client(
            host=self.host,
            port=self.port,
            user=unquote(u.username or "default"),
            password=unquote(u.password or ""),
            database="default",
            connect_timeout=connect_timeout,
            send_receive_timeout=300,
        )
        try:
            self.client.execute("SELECT 1")
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as e:
            raise SinkUnavailable(
                f"cannot reach ClickHouse at {self.url_for_humans}: {e}. "
                "Is the server running and is TOUCHSTREAM_CLICKHOUSE_URL right?"
            ) from e
        except ch_errors.Error as e:
            err = classify(e)
            raise SinkUnavailable(
                f"ClickHouse at {self.url_for_humans} refused the connection: {err}. "
                "Check the user and password in TOUCHSTREAM_CLICKHOUSE_URL"
                if isinstance(err, SinkFatal) else
                f"ClickHouse at {self.url_for_humans} did not answer: {err}"
            ) from e

    def execute(self, sql: str) -> None:
        try:
            self.client.execute(sql)
        except Exception as e:
            raise classify(e) from e

    def insert(self, table: str, rows: Sequence[Row]) -> None:
        if not rows:
            return
        t = BY_NAME[table]
        cols = ", ".join(f"`{c}`" for c in t.column_names)
        columns = [list(c) for c in zip(*rows, strict=True)]
        for i in _DATETIMES[table]:
            # Epoch milliseconds -> the seconds clickhouse-driver takes as they are.
            columns[i] = [v // 1000 if type(v) is int else v for v in columns[i]]
        # Values travel in native blocks, never inside the SQL text.
        try:
            self.client.execute(
                f"INSERT INTO {self.database}.{t.name} ({cols}) VALUES", columns,
                types_check=False, columnar=True,
            )
        except Exception as e:
            raise classify(e) from e

    def query(self, sql: str) -> tuple[list[str], list[Row]]:
        rows, cols = self.client.execute(sql, with_column_types=True)
        return [c for c, _ in cols], [tuple(r) for r in rows]

    def close(self) -> None:
        self.client.disconnect()
