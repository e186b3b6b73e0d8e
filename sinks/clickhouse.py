"""A ClickHouse server through clickhouse-driver (native protocol, port 9000)."""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from urllib.parse import parse_qsl, unquote, urlparse

from clickhouse_driver import Client
from clickhouse_driver import errors as ch_errors

from sinks.base import Row, Sink, SinkUnavailable
from sinks.errors import SinkFatal, classify
from sinks.tables import BY_NAME

_DATETIMES = {
    t.name: [i for i, (_, ty) in enumerate(t.columns) if "DateTime" in ty] for t in BY_NAME.values()
}


# UNKNOWN_USER, WRONG_PASSWORD (18.16), AUTHENTICATION_FAILED (current servers)
_AUTH_FAILED = {192, 193, 516}


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _tls_failure(error: BaseException) -> bool:
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, ssl.SSLError) or "SSL" in str(e) or "certificate" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


class ClickHouseSink(Sink):
    """``clickhouse://user:password@host:9000/database``, or ``clickhouses://`` for TLS
    (port 9440; ``?ca_certs=PATH`` from TOUCHSTREAM_CLICKHOUSE_CA_FILE)."""

    def __init__(self, url: str, connect_timeout: float = 5.0) -> None:
        u = urlparse(url)
        secure = u.scheme == "clickhouses"  # TLS: verified, against ca_certs or system CAs
        self.database = (u.path or "/").strip("/") or "touchstream"
        self.host = u.hostname or "localhost"
        self.port = u.port or (9440 if secure else 9000)
        self.user = unquote(u.username or "default")
        self.url_for_humans = f"{u.scheme}://{self.host}:{self.port}/{self.database}"
        ca_certs = dict(parse_qsl(u.query)).get("ca_certs")
        # The database may not exist yet (migrate creates it): connect to `default`.
        self.client = Client(
            host=self.host,
            port=self.port,
            user=self.user,
            password=unquote(u.password or ""),
            database="default",
            connect_timeout=connect_timeout,
            send_receive_timeout=300,
            **({"secure": True, "verify": True, "ca_certs": ca_certs} if secure else {}),
        )
        try:
            self.client.execute("SELECT 1")
        except ch_errors.ServerException as e:
            if e.code in _AUTH_FAILED:
                raise SinkUnavailable(
                    f"ClickHouse at {self.url_for_humans} refused authentication for user "
                    f"{self.user!r}: check the user and TOUCHSTREAM_CLICKHOUSE_PASSWORD(_FILE) "
                    "or the password in TOUCHSTREAM_CLICKHOUSE_URL"
                ) from e
            raise
        except (ch_errors.NetworkError, ch_errors.SocketTimeoutError, OSError, EOFError) as e:
            if _tls_failure(e):
                raise SinkUnavailable(
                    f"TLS to ClickHouse at {self.url_for_humans} failed: {_first_line(e)}. "
                    "Does TOUCHSTREAM_CLICKHOUSE_CA_FILE hold the CA that signed the "
                    "server's certificate, and is the host name in it?"
                ) from e
            raise SinkUnavailable(
                f"cannot reach ClickHouse at {self.url_for_humans}: {_first_line(e)}. "
                "Is the server running and is TOUCHSTREAM_CLICKHOUSE_URL right?"
            ) from e
        except ch_errors.Error as e:
            err = classify(e)
            raise SinkUnavailable(
                f"ClickHouse at {self.url_for_humans} refused the connection: {err}. "
                "Check the user and password in TOUCHSTREAM_CLICKHOUSE_URL"
                if isinstance(err, SinkFatal)
                else f"ClickHouse at {self.url_for_humans} did not answer: {err}"
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
        # Values travel in native blocks, never inside the SQL text. Into a Distributed
        # table the insert returns once every shard has its rows: acked offsets then
        # mean rows on the shards, not in the receiving server's queue.
        settings = {"insert_distributed_sync": 1} if self.cluster else None
        try:
            self.client.execute(
                f"INSERT INTO {self.database}.{t.name} ({cols}) VALUES",
                columns,
                types_check=False,
                columnar=True,
                settings=settings,
            )
        except Exception as e:
            raise classify(e) from e

    def query(self, sql: str) -> tuple[list[str], list[Row]]:
        try:
            rows, cols = self.client.execute(sql, with_column_types=True)
        except Exception as e:
            raise classify(e) from e
        return [c for c, _ in cols], [tuple(r) for r in rows]

    def close(self) -> None:
        self.client.disconnect()
