"""Customer intelligence through the real pipeline: a planted stream goes through the
Tansu broker and a `touchstream worker` into ClickHouse 18.16, and the decisions found in
ClickHouse and on the alerts topic are scored against the truth."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from sinks import open_sink
from touchstream.evaluate import evaluate, from_clickhouse, run_in_process
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import disorder, simulate

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration


def test_a_planted_stream_out_of_order_and_duplicated_meets_the_targets_end_to_end(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    events, truths = simulate(300, seed=11)
    arrival = list(disorder(events, shuffle_s=3600, duplicate_rate=0.05, seed=12))
    s = settings_for(broker, clickhouse.url(unique("intel")), tmp_path)
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(arrival, 1))
        assert report.sent == len(arrival) and not report.rejected
        wait_committed(s, report.end_offsets, proc, log)

    with open_sink(s.clickhouse_url) as sink:
        decisions = from_clickhouse(sink)
        db = sink.database
        n_events = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
        _, ups = sink.query(
            f"SELECT from_stage, to_stage, count() FROM {db}.transitions FINAL "
            "WHERE to_stage IN ('formation', 'stability') GROUP BY from_stage, to_stage"
        )
        n_alerts = sink.query(f"SELECT count() FROM {db}.alerts FINAL")[1][0][0]
    assert n_events == len(events)  # duplicates counted once
    # Never skipped on the way up (recoveries from decline aside).
    assert {(f, t) for f, t, _ in ups} <= {
        ("exploration", "formation"),
        ("formation", "stability"),
        ("decline", "formation"),
        ("decline", "stability"),
    }
    result = evaluate(truths, decisions)
    assert result.meets_targets(), result
    assert result.stage_accuracy >= 0.95
    # The stream decides as the same batch code does in process, in event order.
    assert decisions.states == run_in_process(events, partitions=s.partitions).states

    consumer = KafkaConsumer(
        s.alerts_topic,
        bootstrap_servers=s.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    alerts = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert alerts and all(a["schema_version"] == 1 for a in alerts)
    assert len({a["alert_id"] for a in alerts}) == n_alerts
    assert {a["kind"] for a in alerts} >= {"decline", "churned", "recovered"}
