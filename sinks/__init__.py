"""Sinks: where touchstream's results land (ClickHouse server or embedded chdb)."""

from __future__ import annotations

from sinks.base import BatchingWriter, Row, Sink, SinkUnavailable

__all__ = ["BatchingWriter", "Row", "Sink", "SinkUnavailable", "open_sink"]


def open_sink(url: str, cluster: str = "") -> Sink:
    """``clickhouse://user:pass@host:9000/db`` (``clickhouses://`` TLS) for a server,
    ``chdb://PATH`` for embedded. ``cluster``: cluster mode, the name of a cluster of the
    server's remote_servers config (servers only)."""
    if url.startswith(("clickhouse://", "clickhouses://")):
        from sinks.clickhouse import ClickHouseSink

        sink = ClickHouseSink(url)
        sink.cluster = cluster
        return sink
    if cluster:
        raise SinkUnavailable(
            f"cluster mode (cluster {cluster!r}) needs ClickHouse servers: "
            "TOUCHSTREAM_CLICKHOUSE_URL must be clickhouse://..., not embedded chdb"
        )
    if url.startswith("chdb://"):
        try:
            from sinks.embedded import ChdbSink
        except ImportError as e:
            raise SinkUnavailable(
                f"chdb:// needs the embedded ClickHouse ({e.name} is not installed): "
                "pip install 'touchstream[embedded]', or use a clickhouse:// server"
            ) from e

        return ChdbSink(url)
    raise SinkUnavailable(
        f"unsupported ClickHouse URL {url!r}: use clickhouse://... or chdb://PATH"
    )
