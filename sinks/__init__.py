"""Sinks: where touchstream's results land (ClickHouse server or embedded chdb)."""

from __future__ import annotations

from sinks.base import BatchingWriter, Row, Sink, SinkUnavailable

__all__ = ["BatchingWriter", "Row", "Sink", "SinkUnavailable", "open_sink"]


def open_sink(url: str) -> Sink:
    """``clickhouse://user:pass@host:9000/db`` (``clickhouses://`` TLS) for a server,
    ``chdb://PATH`` for embedded."""
    if url.startswith(("clickhouse://", "clickhouses://")):
        from sinks.clickhouse import ClickHouseSink

        return ClickHouseSink(url)
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
