"""Stream time that never stalls: a partition that gets no more events is advanced by the
worker to the others' stream time after an idle timeout, so its customers' silence
deadlines fire (real broker, worker and ClickHouse 18.16)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agents.records import key_partition
from sinks import open_sink
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration

T0 = datetime(2024, 1, 1, 12, tzinfo=UTC)


def purchase(cid: str, n: int, at: datetime) -> dict:
    return {
        "event_id": f"{cid}-{n}",
        "customer_id": cid,
        "type": "purchase",
        "occurred_at": at.isoformat(),
        "amount": "20",
        "currency": "USD",
    }


def on_partition(p: int, partitions: int, prefix: str) -> str:
    return next(
        c
        for c in (f"{prefix}{i}" for i in range(1000))
        if key_partition(c.encode(), partitions) == p
    )


def test_a_quiet_partitions_deadlines_fire_once_it_has_been_idle(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("idle")), tmp_path, partitions=2)
    s = s.model_copy(update={"idle_s": 3.0, "tick_s": 1.0})
    quiet, busy = on_partition(0, 2, "quiet-"), on_partition(1, 2, "busy-")
    # The quiet customer's partition has only its one purchase (a decline after 90 days);
    # the other partition's stream goes on to day 200.
    events = [purchase(quiet, 0, T0)] + [
        purchase(busy, n, T0 + timedelta(days=10 * n)) for n in range(21)
    ]
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(events, 1))
        wait_committed(s, report.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            deadline = time.monotonic() + 60
            rows: list = []
            while time.monotonic() < deadline and not rows:
                _, rows = sink.query(
                    f"SELECT to_stage, toUnixTimestamp(at) FROM {sink.database}.transitions "
                    f"FINAL WHERE customer_id = '{quiet}' AND to_stage = 'decline'"
                )
                time.sleep(0.5)
    assert rows, "the idle partition's deadline never fired:\n" + log.read_text()[-2000:]
    # Dated at the deadline itself (90 days after the purchase), not when it was noticed.
    assert rows[0][1] == int((T0 + timedelta(days=90)).timestamp())
    assert "idle for 3s: advanced to" in log.read_text()
