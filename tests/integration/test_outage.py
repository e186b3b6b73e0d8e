"""Nothing lost when ClickHouse goes away: the worker retries and the partition waits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from sinks import open_sink
from touchstream.datasets import sample_events
from touchstream.kafka import committed_offsets
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration


def test_a_clickhouse_outage_delays_the_stream_but_loses_and_doubles_nothing(
    broker: Tansu, tmp_path: Path
) -> None:
    events = list(sample_events(customers=30))
    half = len(events) // 2
    with ClickHouseServer(tmp_path / "ch") as ch:
        s = settings_for(broker, ch.url(unique("outage")), tmp_path)
        log = tmp_path / "worker.log"
        with running_worker(s, log) as proc:
            first = send_events(s, enumerate(events[:half], 1))
            wait_committed(s, first.end_offsets, proc, log)
            ch.stop()
            second = send_events(s, enumerate(events[half:], half + 1))
            time.sleep(5)
            done = committed_offsets(s.bootstrap, s.app_id, s.input_topic, second.end_offsets)
            assert any(done.get(p, 0) < e for p, e in second.end_offsets.items()), (
                "offsets were committed while ClickHouse was down"
            )
            assert proc.poll() is None, "the worker must wait, not crash"
            ch.start()
            wait_committed(s, second.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            n = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
            purchases = sink.query(f"SELECT sum(purchases) FROM {db}.customer_state FINAL")[1][0][0]
    assert n == len(events)
    assert purchases == sum(1 for e in events if e["type"] == "purchase")
    assert "ClickHouse write failed" in log.read_text()
