"""A worker on the RocksDB store (TOUCHSTREAM_STORE=rocksdict://) killed with SIGKILL in
the middle of a stream resumes from its local store: its table recovery reads only the
changelog written after what the store held, not the whole changelog, and every event
still counts once in ClickHouse, with the decisions of one uninterrupted run (silence
deadlines rebuilt from the store). Real processes: Tansu, the worker, ClickHouse 18.16."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from schemas.events import epoch_ms
from sinks import open_sink
from touchstream.behaviour import instant_of
from touchstream.config import Settings
from touchstream.domain.messages import CLOCK_KEY, clock_value
from touchstream.evaluate import from_clickhouse, run_in_process
from touchstream.kafka import committed_offsets, producer
from touchstream.local_servers import ClickHouseServer, Tansu
from touchstream.producing import send_events
from touchstream.simulate import simulate

from .conftest import running_worker, settings_for, unique, wait_committed
from .faults import generation, settled, wait_for

pytestmark = pytest.mark.integration


def changelog_ends(s: Settings) -> dict[int, int]:
    """The end offset of each partition of the worker's table changelog."""
    topic = f"{s.app_id}-customers-changelog"
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap)
    try:
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        return {tp.partition: end for tp, end in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def recovery_tables(log: str) -> tuple[dict[int, int], dict[int, int]]:
    """Faust's recovery log of the changelog partitions: (highwater, offset reading starts
    at) per partition, from its "Highwater - Active" and "Reading Starts At - Active"
    tables."""

    def table(title: str) -> dict[int, int]:
        block = log.split(title, 1)[1].split("\n+", 2)[1]  # the header, then the rows
        rows = re.findall(r"^\| \S+\s+\| (\d+)\s+\| (-?\d+)\s+\|", block, re.M)
        return {int(p): int(v) for p, v in rows}

    return table("Highwater - Active"), table("Reading Starts At - Active")


def count(sink, sql: str) -> int:
    return sink.query(sql.format(db=sink.database))[1][0][0]


def counted_once(events: list[dict], clickhouse_url: str) -> None:
    """Every event is in ClickHouse once and each customer's state version is its count."""
    with open_sink(clickhouse_url) as sink:
        n_events = count(sink, "SELECT count() FROM {db}.events FINAL")
        versions = dict(
            sink.query(f"SELECT customer_id, version FROM {sink.database}.customer_state FINAL")[1]
        )
    per_customer: dict[str, int] = {}
    for e in events:
        per_customer[e["customer_id"]] = per_customer.get(e["customer_id"], 0) + 1
    assert n_events == len(events)
    assert versions == per_customer


def test_a_worker_killed_mid_stream_resumes_from_its_rocksdb_store_and_counts_every_event_once(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    events, _ = simulate(120, seed=21)
    first, second = len(events) * 2 // 3, len(events) * 5 // 6
    # One record per changelog batch: Tansu's log end is wrong for longer ones, and Faust
    # would find the store ahead of the changelog (docs/operations.md). idle_s=0: no
    # wall-clock advance of quiet partitions, so the decisions follow the events alone.
    s = settings_for(broker, clickhouse.url(unique("local")), tmp_path).model_copy(
        update={
            "store": "rocksdict://",
            "producer_max_batch_size": 1,
            "idle_s": 0,
            "batch_max": 100,  # many batches, so the changelog is long beside its tail
            # The killed worker stays in the group until its session times out.
            "session_timeout_s": 6.0,
        }
    )
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    with running_worker(s, logs[0]) as proc, open_sink(s.clickhouse_url) as sink:
        report = send_events(s, enumerate(events[:first], 1))
        wait_committed(s, report.end_offsets, proc, logs[0])
        stored = changelog_ends(s)  # committed, so in the store with its changelog offsets
        middle = send_events(s, enumerate(events[first:second], first + 1)).end_offsets
        deadline = time.monotonic() + 120
        while count(sink, "SELECT count() FROM {db}.events") <= first:  # the next batches
            assert proc.poll() is None and time.monotonic() < deadline, logs[0].read_text()[-3000:]
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    # Killed in the middle: some of what it had processed was not committed yet, so the
    # next worker gets it again (and must not count it twice).
    committed = committed_offsets(s.bootstrap, s.app_id, s.input_topic, middle)
    assert any(committed.get(q, 0) < end for q, end in middle.items()), (committed, middle)

    with running_worker(s, logs[1]) as proc:
        report = send_events(s, enumerate(events[second:], second + 1))
        # Close the period on every partition, as `touchstream tick` does, so the silent
        # customers' deadlines (known to the new process only from its store) fire.
        latest = max(epoch_ms(instant_of(e)) for e in events)
        p = producer(s.bootstrap)
        for partition in range(s.partitions):
            md = p.send(
                s.input_topic, key=CLOCK_KEY, value=clock_value(latest), partition=partition
            ).get(timeout=30)
            report.end_offsets[partition] = max(report.end_offsets.get(partition, 0), md.offset + 1)
        p.close()
        wait_committed(s, report.end_offsets, proc, logs[1])
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = logs[1].read_text()
    assert code == 0, text[-3000:]  # a clean stop on RocksDB
    assert "Closing rocksdb on stop" in text

    highwater, start = recovery_tables(text)
    assert set(start) == set(range(s.partitions)), text[-3000:]
    # Where recovery started: at least at the last record the store held before the kill
    # (Faust re-reads that one), not at the beginning (-1) as on the memory store.
    assert all(start[q] >= stored[q] - 1 for q in stored if stored[q]), (start, stored)
    read = sum(max(0, highwater[q] - start[q]) for q in start)
    total = sum(highwater[q] + 1 for q in highwater)
    assert read <= total - sum(stored.values()) + s.partitions, (read, total, stored)
    assert read * 4 < total, (read, total, stored)

    with open_sink(s.clickhouse_url) as sink:
        n_events = count(sink, "SELECT count() FROM {db}.events FINAL")
        versions = dict(
            sink.query(f"SELECT customer_id, version FROM {sink.database}.customer_state FINAL")[1]
        )
        decisions = from_clickhouse(sink)
    per_customer: dict[str, int] = {}
    for e in events:
        per_customer[e["customer_id"]] = per_customer.get(e["customer_id"], 0) + 1
    assert n_events == len(events)
    assert versions == per_customer  # every event applied exactly once across the kill
    expected = run_in_process(events, partitions=s.partitions, until_ms=latest)
    assert decisions.states == expected.states


def test_a_worker_restarted_with_its_instance_id_takes_its_partitions_back_without_a_rebalance(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    # Static membership: the killed worker's member stays in the group under its instance
    # id, and the restarted one takes its place and its assignment at once, in the same
    # generation, instead of waiting out the session timeout (30 s here) for a rebalance.
    events, _ = simulate(60, seed=5)
    half = len(events) // 2
    s = settings_for(broker, clickhouse.url(unique("static")), tmp_path).model_copy(
        update={
            "store": "rocksdict://",
            "producer_max_batch_size": 1,
            "idle_s": 0,
            "session_timeout_s": 30.0,
            "group_instance_id": "worker-a",
        }
    )
    logs = [tmp_path / "worker-0.log", tmp_path / "worker-1.log"]
    with running_worker(s, logs[0]) as proc:
        report = send_events(s, enumerate(events[:half], 1))
        wait_committed(s, report.end_offsets, proc, logs[0])
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    before = generation(logs[0])
    assert before >= 0, logs[0].read_text()[-3000:]
    with running_worker(s, logs[1]) as proc:
        report = send_events(s, enumerate(events[half:], half + 1))
        wait_committed(s, report.end_offsets, proc, logs[1])
    assert generation(logs[1]) == before, logs[1].read_text()[-3000:]
    counted_once(events, s.clickhouse_url)


def last_recovery(log: str) -> tuple[dict[int, int], dict[int, int]]:
    """``recovery_tables`` of the worker's latest table recovery (after a takeover)."""
    at = log.rfind("Highwater - Active")
    return recovery_tables(log[at:])


def test_a_standby_takes_over_a_killed_workers_partitions_reading_little_of_their_changelog(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    # TOUCHSTREAM_STANDBYS=1: each worker keeps the other's partitions up to date from the
    # changelog in its own RocksDB store, so when one is killed the other recovers them
    # from where its copy stands, not from the changelog's start.
    events, _ = simulate(120, seed=8)
    half = len(events) // 2
    base = settings_for(broker, clickhouse.url(unique("standby")), tmp_path).model_copy(
        update={
            "store": "rocksdict://",
            "standbys": 1,
            "producer_max_batch_size": 1,
            "idle_s": 0,
            "session_timeout_s": 6.0,
        }
    )
    workers = [base.model_copy(update={"data_dir": str(tmp_path / f"data-{i}")}) for i in range(2)]
    logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
    topic = base.input_topic
    with running_worker(workers[0], logs[0]) as a, running_worker(workers[1], logs[1]) as b:
        wait_for(
            "two workers sharing", lambda: settled(logs, topic, base.partitions), [a, b], logs, 120
        )
        report = send_events(base, enumerate(events[:half], 1))
        wait_committed(base, report.end_offsets, b, logs[1])
        written = changelog_ends(base)
        time.sleep(5)  # the standby copies follow the changelog
        a.send_signal(signal.SIGKILL)
        assert a.wait(30) == -signal.SIGKILL
        wait_for(
            "the standby holding every partition",
            lambda: settled(logs[1:], topic, base.partitions),
            [b],
            logs[1:],
            120,
        )
        report = send_events(base, enumerate(events[half:], half + 1))
        wait_committed(base, report.end_offsets, b, logs[1])
    text = logs[1].read_text()
    highwater, start = last_recovery(text)
    assert set(start) == set(range(base.partitions)), text[-3000:]
    read = sum(max(0, highwater[q] - start[q]) for q in start)
    total = sum(written.values())
    assert total > 100, written
    assert read * 10 < total, (read, total, start, highwater)
    counted_once(events, base.clickhouse_url)
