"""Two workers share the partitions: each event is handled once, and the RFM score
cut-offs each publishes cover the whole population (sketches shared by a global table)."""

from __future__ import annotations

import re
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from sinks import open_sink
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import simulate

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration


def test_two_workers_share_the_partitions_and_score_against_the_whole_population(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    events, _ = simulate(200, seed=31)
    s = settings_for(broker, clickhouse.url(unique("two")), tmp_path)
    s = s.model_copy(update={"cutoff_interval_s": 1.0})
    with ExitStack() as stack:
        procs = []
        for n in range(2):
            w = s.model_copy(update={"data_dir": str(tmp_path / f"worker-{n}")})
            procs.append(stack.enter_context(running_worker(w, tmp_path / f"worker-{n}.log")))
        time.sleep(8)  # both join the group before the data arrives (Tansu: about 5 s)
        report = send_events(s, enumerate(events, 1))
        wait_committed(s, report.end_offsets, procs[0], tmp_path / "worker-0.log")
        assert all(p.poll() is None for p in procs)
        buyers = len({e["customer_id"] for e in events if e["type"] == "purchase"})
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            deadline = time.monotonic() + 30
            while True:
                _, rows = sink.query(
                    f"SELECT max(population) FROM {db}.rfm_cutoffs FINAL "
                    f"WHERE as_of = (SELECT max(as_of) FROM {db}.rfm_cutoffs FINAL)"
                )
                if rows[0][0] == buyers or time.monotonic() > deadline:
                    break
                time.sleep(1)
            n_events = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
            partitions_by_worker = sink.query(
                f"SELECT count(DISTINCT kafka_partition) FROM {db}.events"
            )[1][0][0]
    assert rows[0][0] == buyers, "cut-offs must count every buyer, not one worker's half"
    assert n_events == len(events)
    assert partitions_by_worker == s.partitions
    # Each worker was assigned a share of the input partitions (Faust logs the assignment).
    shares = []
    for n in range(2):
        lines = [
            ln
            for ln in (tmp_path / f"worker-{n}.log").read_text().splitlines()
            if ln.startswith(f"| {s.input_topic} ")
        ]
        assert lines, f"worker {n} was never assigned an input partition"
        shares.append(set(re.findall(r"\d+", lines[-1].split("|")[2])))
    assert shares[0] and shares[1] and not shares[0] & shares[1]
