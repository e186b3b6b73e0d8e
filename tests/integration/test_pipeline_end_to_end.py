"""The whole path for real: Tansu broker -> `touchstream worker` process -> ClickHouse."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer

from sinks import open_sink
from touchstream.datasets import BAD_SAMPLES, cdnow_events, sample_events
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import disorder

from .conftest import running_worker, settings_for, unique, wait_committed
from .lifetimes_check import RFM_SQL, cdnow_reference, mismatches, quintile_scores

pytestmark = pytest.mark.integration


def test_cdnow_replayed_through_kafka_faust_and_clickhouse_server_matches_lifetimes(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("cdnow")), tmp_path, partitions=8)
    s = s.model_copy(update={"cutoff_interval_s": 2.0})
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        report = send_events(s, enumerate(cdnow_events(), 1))
        assert report.sent == 69_659 and not report.rejected
        wait_committed(s, report.end_offsets, proc, log)
        cutoffs_sql = "SELECT max(population) FROM {db}.rfm_cutoffs FINAL"
        with open_sink(s.clickhouse_url) as sink:
            deadline = time.monotonic() + 60
            while sink.query(cutoffs_sql.format(db=sink.database))[1][0][0] < 23_570:
                assert time.monotonic() < deadline, "no cut-offs for the whole population"
                time.sleep(1)
            _, scores = sink.query(
                f"SELECT customer_id, r_score, f_score, m_score, segment "
                f"FROM {sink.database}.customer_scores"
            )
    assert len(scores) == 23_570
    expected = quintile_scores(cdnow_reference())
    for axis, column in ((1, "r"), (2, "f")):  # exact buckets: exactly the quintiles
        wrong = [c for c, *sc in scores if sc[axis - 1] != expected[c][column]]
        assert wrong == [], f"{column} scores differ for {len(wrong)} customers: {wrong[:5]}"
    # Net spend sketches are 1% accurate: a customer next to a cut-off may score one off.
    m_off = [c for c, r, f, m, seg in scores if abs(m - expected[c]["m"]) > 1]
    m_near = [c for c, r, f, m, seg in scores if m != expected[c]["m"]]
    assert m_off == [] and len(m_near) < 0.01 * len(scores)
    # CDNOW is one cohort acquired in early 1997: by 1998 nobody is "new".
    assert {seg for *_, seg in scores} >= {"champions", "hibernating", "loyal"}
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
        report = send_events(
            s, enumerate(good, 1), raw_extra=[(b"S00001", b) for b in BAD_SAMPLES] + [wrong_key]
        )
        wait_committed(s, report.end_offsets, proc, log)
    consumer = KafkaConsumer(
        s.dlq_topic,
        bootstrap_servers=s.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5000,
    )
    envelopes = [orjson.loads(m.value) for m in consumer]
    consumer.close()
    assert len(envelopes) == len(BAD_SAMPLES) + 1
    assert {e["topic"] for e in envelopes} == {s.input_topic}
    assert sorted(e["raw"].encode() for e in envelopes if e["key"] == "S00001") == sorted(
        BAD_SAMPLES
    )
    assert any("is not the customer_id" in e["reason"] for e in envelopes)
    with open_sink(s.clickhouse_url) as sink:
        _, rows = sink.query(f"SELECT reason FROM {sink.database}.dead_letters FINAL")
        n_events = sink.query(f"SELECT count() FROM {sink.database}.events FINAL")[1][0][0]
    assert len(rows) == len(BAD_SAMPLES) + 1
    assert any("timezone" in r[0] for r in rows)
    assert n_events == len(good)


def test_replaying_history_in_another_arrival_order_gives_the_same_results(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    """Partitions interleave freely; within one, events may arrive up to the allowed
    lateness (TOUCHSTREAM_LATENESS_S, 1 h) out of order, and 5% twice. Nothing changes."""
    events = list(sample_events(customers=60))
    reordered = list(disorder(events, shuffle_s=3600, duplicate_rate=0.05, seed=4))
    assert [e["event_id"] for e in reordered] != [e["event_id"] for e in events]
    results = []
    for order in (events, reordered):
        s = settings_for(broker, clickhouse.url(unique("replay")), tmp_path)
        log = tmp_path / f"{s.app_id}.log"
        with running_worker(s, log) as proc:
            report = send_events(s, enumerate(order, 1))
            wait_committed(s, report.end_offsets, proc, log)
        with open_sink(s.clickhouse_url) as sink:
            db = sink.database
            results.append(
                [
                    sink.query(f"SELECT * FROM {db}.{table} FINAL ORDER BY {key}")[1]
                    for table, key in (
                        ("customer_state", "customer_id"),
                        ("transitions", "customer_id, seq"),
                        ("alerts", "customer_id, alert_id"),
                    )
                ]
                + [
                    sink.query(f"SELECT * FROM {db}.customer_rfm ORDER BY customer_id")[1],
                    sink.query(f"SELECT count() FROM {db}.events FINAL")[1],
                ]
            )
    assert results[0][-1] == [(len(events),)]
    assert results[0][1], "the sample has lifecycle transitions"
    for a, b in zip(results[0], results[1], strict=True):
        assert a == b
