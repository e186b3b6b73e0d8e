"""Both sinks, the same way: a DateTime as an aware datetime or as epoch milliseconds
(the worker's rows use milliseconds); a backfill touching more partitions than a current
server takes in one insert; rows the server refuses, set aside with its reason."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from sinks import BatchingWriter, open_sink
from touchstream.local_servers import ClickHouseServer


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


def month_ms(i: int) -> int:
    return int(datetime(2010 + i // 12, i % 12 + 1, 15, tzinfo=UTC).timestamp() * 1000)


def event_row(i: int, ms: int, amount: Decimal = Decimal("9.99")) -> tuple:
    return (f"e{i}", "c1", "purchase", ms, "", amount, "EUR", "{}", 0, i, 1)


def test_a_backfill_of_120_months_in_one_flush_is_written_whole(sink_url: str) -> None:
    with open_sink(sink_url) as sink:
        sink.migrate()
        writer = BatchingWriter(sink)
        writer.add("events", [event_row(i, month_ms(i)) for i in range(120)])
        assert writer.flush() == 120
        _, rows = sink.query(
            f"SELECT count(), uniqExact(toYYYYMM(occurred_at)) FROM {sink.database}.events"
        )
    assert [tuple(r) for r in rows] == [(120, 120)]


def test_rows_clickhouse_refuses_go_to_dead_letters_with_its_reason_and_the_rest_is_written(
    sink_url: str,
) -> None:
    at = datetime.now(UTC)  # within the dead letters' TTL (a current server drops older)
    rows = [event_row(i, month_ms(i)) for i in range(50)]
    rows[7] = event_row(7, month_ms(7), Decimal("99999999999999999999.9999"))  # 24 digits
    with open_sink(sink_url) as sink:
        sink.migrate()
        writer = BatchingWriter(sink, clock=lambda: at)
        writer.add("events", rows)
        assert writer.flush() == 49
        db = sink.database
        _, stored = sink.query(f"SELECT event_id FROM {db}.events FINAL ORDER BY kafka_offset")
        _, dead = sink.query(f"SELECT topic, key, reason, raw FROM {db}.dead_letters FINAL")
    assert [r[0] for r in stored] == [f"e{i}" for i in range(50) if i != 7]
    [(topic, key, reason, raw)] = dead
    assert (topic, key) == ("clickhouse:events", "customer_id=c1 event_id=e7")
    assert reason.startswith("ClickHouse refused this events row: ")
    assert "Stack trace" not in reason and "\n" not in reason
    assert orjson.loads(raw)["amount"] == "99999999999999999999.9999"
