"""Producers partition as their client does: librdkafka-based clients (confluent-kafka,
Go, .NET, kcat) hash keys with CRC32, Java and kafka-python with murmur2. A real worker
takes either, as long as each customer stays on one partition."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import pytest
from kafka.partitioner.default import murmur2

from sinks import open_sink
from touchstream.kafka import producer
from touchstream.local_servers import ClickHouseServer, Tansu

from .conftest import running_worker, settings_for, unique, wait_committed

pytestmark = pytest.mark.integration


def crc32_partition(key: bytes, n: int) -> int:
    """librdkafka's consistent / consistent_random partitioner, for a keyed message."""
    return zlib.crc32(key) % n


def test_a_stream_partitioned_by_crc32_is_accepted_and_a_customer_on_two_partitions_is_not(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("crc")), tmp_path)
    n = s.partitions
    customers = [f"cust-{i}" for i in range(40)]
    moved = [
        c
        for c in customers
        if crc32_partition(c.encode(), n) != (murmur2(c.encode()) & 0x7FFFFFFF) % n
    ]
    assert len(moved) >= 20  # most customers are where murmur2 would not put them
    p = producer(s.bootstrap)
    end: dict[int, int] = {}

    def send(event: dict[str, str], partition: int) -> None:
        md = p.send(
            s.input_topic,
            key=event["customer_id"].encode(),
            value=orjson.dumps(event),
            partition=partition,
        ).get(timeout=30)
        end[md.partition] = max(end.get(md.partition, 0), md.offset + 1)

    events = [
        {
            "event_id": f"e{i}",
            "customer_id": customers[i % 40],
            "type": "purchase",
            "occurred_at": f"2024-{1 + i // 40:02d}-01T10:00:00Z",
            "amount": "5.00",
            "currency": "EUR",
        }
        for i in range(200)
    ]
    for e in events:
        send(e, crc32_partition(e["customer_id"].encode(), n))
    log = tmp_path / "worker.log"
    with running_worker(s, log) as proc:
        wait_committed(s, end, proc, log)
        # Then the same customer, one more message, on a partition it has never been on
        # (sent only now: the partition a customer is first seen on is its home).
        stray = {**events[0], "event_id": "stray"}
        home = crc32_partition(stray["customer_id"].encode(), n)
        send(stray, (home + 1) % n)
        p.close()
        wait_committed(s, end, proc, log)
    with open_sink(s.clickhouse_url) as sink:
        db = sink.database
        n_events = sink.query(f"SELECT count() FROM {db}.events FINAL")[1][0][0]
        purchases = dict(
            sink.query(f"SELECT customer_id, purchases FROM {db}.customer_state FINAL")[1]
        )
        dead = sink.query(f"SELECT key, partition, reason FROM {db}.dead_letters FINAL")[1]
    assert n_events == len(events)
    assert purchases == dict.fromkeys(customers, 5)
    [(key, partition, reason)] = dead
    assert (key, partition) == (stray["customer_id"], (home + 1) % n)
    assert f"but customer '{stray['customer_id']}' is on partition {home}" in reason
    assert "one partition" in reason
