"""Values that once stopped every ClickHouse write, through a real worker and server:
events dated where DateTime cannot go and amounts Decimal(18, 4) cannot hold are
dead-lettered and the stream goes on; a table gone from under the worker stops it with a
one-line reason instead of retrying forever."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from sinks import open_sink
from touchstream.kafka import committed_offsets
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration


def purchase(eid: str, cid: str, at: str, amount: str = "10.00") -> dict[str, str]:
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": "purchase",
        "occurred_at": at,
        "amount": amount,
        "currency": "EUR",
    }


def test_events_clickhouse_cannot_store_are_dead_lettered_and_every_other_event_lands(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("bad")), tmp_path, partitions=2)
    good = [purchase(f"g{i}", f"c{i % 3}", f"2024-0{1 + i % 9}-01T10:00:00Z") for i in range(30)]
    bad_times = [
        "0001-01-01T00:00:00Z",
        "1900-06-01T00:00:00Z",
        "1969-12-31T23:00:00Z",
        "2106-03-01T00:00:00Z",
        "9999-12-31T23:59:59Z",
        "2099-01-01T00:00:00Z",
    ]
    bad = [purchase(f"b{i}", "c1", t) for i, t in enumerate(bad_times)]
    bad += [
        purchase(f"m{i}", "c2", "2024-05-01T10:00:00Z", "99999999999999.9999") for i in range(2)
    ]
    raw = [(e["customer_id"].encode(), orjson.dumps(e)) for e in bad]
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        first = send_events(s, enumerate(good[:15], 1), raw_extra=raw)
        second = send_events(s, enumerate(good[15:], 16))
        end = {
            p: max(first.end_offsets.get(p, 0), second.end_offsets.get(p, 0))
            for p in range(s.partitions)
        }
        wait_committed(s, end, proc, log)
        assert proc.poll() is None
    with open_sink(s.clickhouse_url) as sink:
        db = sink.database
        n = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
        spend = dict(
            sink.query(f"SELECT customer_id, toString(net_spend) FROM {db}.customer_state FINAL")[1]
        )
        reasons = [r[0] for r in sink.query(f"SELECT reason FROM {db}.dead_letters FINAL")[1]]
    assert n == len(good)
    assert spend == {"c0": "100.0000", "c1": "100.0000", "c2": "100.0000"}
    assert len(reasons) == len(bad)
    assert sum("occurred_at" in r and "1970-01-02" in r for r in reasons) == 5
    assert (
        sum("more than 86400 s after the time the worker received it" in r for r in reasons) == 1
    )  # 2099: storable, but not from the future
    assert sum("amount" in r and "10000000000" in r for r in reasons) == 2
    assert "ClickHouse write failed" not in log.read_text()


def test_a_table_dropped_under_a_running_worker_stops_it_with_a_one_line_reason(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("fatal")), tmp_path, partitions=2)
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        first = send_events(s, enumerate([purchase("e1", "c1", "2024-01-01T10:00:00Z")], 1))
        wait_committed(s, first.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            sink.execute(f"DROP TABLE {sink.database}.events")
        second = send_events(s, enumerate([purchase("e2", "c1", "2024-01-02T10:00:00Z")], 2))
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert proc.poll() is not None, "the worker must stop by itself: " + log.read_text()[-3000:]
    output = log.read_text()
    assert proc.returncode == 2, output[-3000:]
    [error] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "ClickHouse refused the worker's writes: Code: 60." in error
    assert "events" in error and "Stack trace" not in error
    assert "Traceback" not in output
    done = committed_offsets(s.bootstrap, s.app_id, s.input_topic, second.end_offsets)
    assert any(done.get(p, 0) < e for p, e in second.end_offsets.items()), (
        "the batch that was not written must not be committed"
    )
