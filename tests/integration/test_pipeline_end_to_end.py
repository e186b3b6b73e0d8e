"""The whole path for real: Tansu broker -> `touchstream worker` process -> ClickHouse."""

from __future__ import annotations

import random
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from sinks import open_sink
from touchstream.datasets import BAD_SAMPLES, cdnow_events, sample_events
from touchstream.localstack import ClickHouseServer, Tansu
from touchstream.producing import send_events

from .conftest import running_worker, settings_for, unique, wait_committed
from .lifetimes_check import RFM_SQL, cdnow_reference, mismatches

pytestmark = pytest.mark.integration


def test_cdnow_replayed_through_kafka_faust_and_clickhouse_server_matches_lifetimes(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("cdnow")), tmp_path, partitions=8)
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(cdnow_events(), 1))
        assert report.sent == 69_659 and not report.rejected
        wait_committed(s, report.end_offsets, proc, log)
    with open_sink(s.clickhouse_url) as sink:
        db = sink.database
        assert sink.query(f"SELECT count() FROM {db}.events FINAL")[1] == [(69_659,)]
        _, rows = sink.query(RFM_SQL.format(db=db))
    ours = {r[0]: r[1:] for r in rows}
    assert len(ours) == 23_570
    assert mismatches(cdnow_reference(), ours) == []


def test_malformed_messages_reach_the_dead_letter_topic_and_table_with_a_reason(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("dlq")), tmp_path)
    log = tmp_path / "worker.log"
    good = list(sample_events(customers=5))
    wrong_key = (b"someone-else", orjson.dumps(good[0]))
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(good, 1),
                             raw_extra=[(b"S00001", b) for b in BAD_SAMPLES] + [wrong_key])
        wait_committed(s, report.end_offsets, proc, log)
    consumer = KafkaConsumer(s.dlq_topic, bootstrap_servers=s.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=5000)
    envelopes = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert len(envelopes) == len(BAD_SAMPLES) + 1
    assert {e["topic"] for e in envelopes} == {s.input_topic}
    assert sorted(e["raw"].encode() for e in envelopes if e["key"] == "S00001") == sorted(
        BAD_SAMPLES)
    assert any("is not the customer_id" in e["reason"] for e in envelopes)
    with open_sink(s.clickhouse_url) as sink:
        _, rows = sink.query(f"SELECT reason FROM {sink.database}.dead_letters FINAL")
        n_events = sink.query(f"SELECT count() FROM {sink.database}.events FINAL")[1][0][0]
    assert len(rows) == len(BAD_SAMPLES) + 1
    assert any("timezone" in r[0] for r in rows)
    assert n_events == len(good)


def test_replaying_history_in_another_order_across_customers_gives_the_same_results(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    events = list(sample_events(customers=60))
    # Same per-customer order, a different interleaving across customers, plus redelivered
    # copies of some events (a producer retry): nothing may change.
    by_customer: dict[str, list[dict]] = {}
    for e in events:
        by_customer.setdefault(e["customer_id"], []).append(e)
    rng = random.Random(3)
    queues = {c: list(v) for c, v in by_customer.items()}
    shuffled: list[dict] = []
    while queues:
        c = rng.choice(sorted(queues))
        e = queues[c].pop(0)
        shuffled.append(e)
        if rng.random() < 0.05:
            shuffled.append(e)
        if not queues[c]:
            del queues[c]
    results = []
    for order in (events, shuffled):
        s = settings_for(broker, clickhouse.url(unique("replay")), tmp_path)
        log = tmp_path / f"{s.app_id}.log"
        with running_worker(s, log) as proc:
            report = send_events(s, enumerate(order, 1))
            wait_committed(s, report.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            results.append((
                sink.query(f"SELECT * FROM {db}.customer_state FINAL ORDER BY customer_id")[1],
                sink.query(f"SELECT * FROM {db}.customer_rfm ORDER BY customer_id")[1],
                sink.query(f"SELECT count() FROM {db}.events FINAL")[1],
            ))
    assert results[0][2] == [(len(events),)]
    assert results[0] == results[1]
