"""Both sinks take a DateTime as an aware datetime or as epoch milliseconds, with the same
result (the worker's rows use milliseconds)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sinks import open_sink
from touchstream.localstack import ClickHouseServer


@pytest.fixture(params=["server", "chdb"])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    db = f"t_{uuid.uuid4().hex[:8]}"
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse")
        return server.url(db)
    return f"chdb://{tmp_path / 'chdb'}?database={db}"


def test_a_datetime_column_takes_epoch_milliseconds_and_datetimes_alike(sink_url: str) -> None:
    at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    with open_sink(sink_url) as sink:
        sink.migrate()
        sink.insert("stream_clock", [(1, at, 1), (2, int(at.timestamp() * 1000), 1)])
        _, rows = sink.query(
            f"SELECT partition, toString(stream_time) FROM {sink.database}.stream_clock "
            "ORDER BY partition"
        )
    assert [tuple(r) for r in rows] == [(1, "2025-03-04 05:06:07"), (2, "2025-03-04 05:06:07")]
