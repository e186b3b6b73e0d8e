"""A worker killed with SIGKILL over and over while events stream in: each time it loses
whatever it had not committed, a new one picks up from the commits and the table's
changelog, and in the end every event counts exactly once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from touchstream.local_servers import ClickHouseServer, Tansu, stop_process

from .conftest import settings_for, spawn_worker, unique
from .faults import clean_logs, drain, kill9, progress, touchpoints, wait_for
from .streams import Stream
from .verify import verify

pytestmark = pytest.mark.integration

# 25,000 events rather than 100,000, streamed at 400 a second throughout the five kills:
# the restarts with their group rejoins and table recoveries take most of a minute on a
# 2-core machine, and what matters is the events in flight at each kill, not their
# number (docs/operations.md, "Faults proven in CI").
EVENTS = 25_000
KILLS = 5


def test_a_worker_killed_five_times_mid_stream_loses_nothing_and_counts_nothing_twice(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    # One record per changelog batch: Tansu's wrong log end would stop table recovery
    # early otherwise (docs/operations.md). A short session: the killed worker's
    # membership expires after 6 s, and its successor gets the partitions.
    s = settings_for(broker, clickhouse.url(unique("kill")), tmp_path).model_copy(
        update={"producer_max_batch_size": 1, "session_timeout_s": 6.0}
    )
    logs: list[Path] = []

    def start():
        logs.append(tmp_path / f"worker-{len(logs)}.log")
        return spawn_worker(s, logs[-1])

    began = time.monotonic()
    cycles: list[float] = []
    proc = start()
    try:
        with Stream(s.bootstrap, s.input_topic, touchpoints(10**6, 500, seed=5), 400) as stream:
            for _ in range(KILLS):
                # Killed once it commits on every partition: recovered and processing,
                # with batches in flight behind its last commit.
                cycles.append(progress(s, [proc], logs))
                kill9(proc)
                proc = start()
            cycles.append(progress(s, [proc], logs))
            wait_for(f"{EVENTS} events sent", lambda: stream.count >= EVENTS, [proc], logs, 120)
            stream.stop()
        drain(s, stream.end, [proc], logs)
    finally:
        stop_process(proc, 30)
    assert proc.returncode == 0, "the last worker must run until it is stopped"
    elapsed = time.monotonic() - began
    report = verify(s.clickhouse_url, s.input_topic, stream.sent)
    assert report.events >= EVENTS
    assert len(logs) == KILLS + 1
    clean_logs(logs)
    took = ", ".join(f"{c:.0f}" for c in cycles)
    print(f"{report.events} events, {KILLS} kills in {elapsed:.0f} s; to each commit: {took} s")
