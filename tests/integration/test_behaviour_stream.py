"""The harder stream, written from the customer's side (touchstream/behaviour.py), through
the Tansu broker, a `touchstream worker` and ClickHouse 18.16: shuffled within 30 minutes
with 3% duplicates, the period closed with `touchstream tick`, scored from ClickHouse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from schemas.events import epoch_ms
from sinks import open_sink
from touchstream.behaviour import END, simulate_behaviour
from touchstream.evaluate import decisions_diff, evaluate, from_clickhouse, run_in_process
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import disorder

from .conftest import ROOT, running_worker, settings_for, unique, wait_committed, worker_env

pytestmark = pytest.mark.integration


def test_the_customer_side_stream_meets_the_targets_through_the_real_pipeline(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    events, truths = simulate_behaviour(700, seed=21)
    arrival = list(disorder(events, shuffle_s=1800, duplicate_rate=0.03, seed=22))
    s = settings_for(broker, clickhouse.url(unique("behaviour")), tmp_path)
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(arrival, 1))
        assert report.sent == len(arrival) and not report.rejected
        wait_committed(s, report.end_offsets, proc, log)
        # Close the period: every partition's deadlines up to the end of the stream fire.
        tick = subprocess.run(
            [
                sys.executable,
                "-m",
                "touchstream.cli",
                "tick",
                "--until",
                END.isoformat().replace("+00:00", "Z"),
            ],
            env=worker_env(s),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert tick.returncode == 0, tick.stderr
        assert f"sent to {s.partitions} partitions" in tick.stdout
        ends = {p: report.end_offsets.get(p, 0) + 1 for p in range(s.partitions)}
        wait_committed(s, ends, proc, log)

    with open_sink(s.clickhouse_url) as sink:
        decisions = from_clickhouse(sink)
        db = sink.database
        n_events = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
        _, risk_rows = sink.query(
            f"SELECT open_issues FROM {db}.alerts FINAL WHERE kind = 'churn_risk'"
        )
    assert n_events == len(events)  # duplicates counted once
    result = evaluate(truths, decisions)
    failed = [(what, figure) for what, figure, met in result.checks() if not met]
    assert not failed, failed
    # Every churn_risk names the live trouble that raised it.
    assert all(r[0] not in ("", "[]") for r in risk_rows)
    # Shuffled and duplicated, through Kafka: the decisions of the in-order run.
    in_order = run_in_process(events, partitions=s.partitions, until_ms=epoch_ms(END))
    assert decisions_diff(decisions, in_order) == {
        "states": {},
        "alerts_only_in_a": [],
        "alerts_only_in_b": [],
    }
