"""2,000 malformed messages of every kind among valid events, through a real worker: each
one is dead-lettered with a reason (table and topic), no valid event is lost or counted
twice, and the worker never stops."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from touchstream.local_servers import ClickHouseServer, Tansu

from .conftest import running_worker, settings_for, unique
from .faults import clean_logs, drain, interleave, malformed, touchpoints
from .streams import Stream
from .verify import verify

pytestmark = pytest.mark.integration

VALID, MALFORMED, CUSTOMERS = 8_000, 2_000, 300


def dead_letter_topic(bootstrap: str, topic: str, partitions: int) -> list[dict]:
    """Every envelope on the dead-letter topic."""
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        fetch_max_bytes=16 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out = []
        while any(c.position(tp) < end[tp] for tp in tps):
            for records in c.poll(timeout_ms=1000).values():
                out.extend(orjson.loads(rec.value) for rec in records)
        return out
    finally:
        c.close()


def test_two_thousand_malformed_messages_are_all_dead_lettered_and_every_valid_event_lands(
    broker: Tansu, clickhouse: ClickHouseServer, tmp_path: Path
) -> None:
    s = settings_for(broker, clickhouse.url(unique("malformed")), tmp_path)
    log = tmp_path / "worker.log"
    customers = [f"c{i}" for i in range(CUSTOMERS)]
    messages = interleave(
        touchpoints(VALID, CUSTOMERS, seed=11), malformed(MALFORMED, customers, seed=12), seed=13
    )
    with running_worker(s, log) as proc:
        with Stream(s.bootstrap, s.input_topic, messages, per_second=2_000) as stream:
            stream.wait()
        drain(s, stream.end, [proc], [log])
        assert proc.poll() is None, "the worker stopped"
    report = verify(s.clickhouse_url, s.input_topic, stream.sent)
    assert report.events == VALID
    assert len(report.reasons) == MALFORMED
    kinds = Counter(sent.message.what for sent in stream.sent if sent.message.event is None)
    assert len(kinds) == 12, kinds  # every kind was drawn
    # The dead-letter topic has the same: each message's place, its reason and its bytes.
    envelopes = {
        (e["partition"], e["offset"]): e
        for e in dead_letter_topic(s.bootstrap, s.dlq_topic, s.partitions)
    }
    for sent in stream.sent:
        if sent.message.event is None:
            e = envelopes.get((sent.partition, sent.offset))
            assert e is not None, f"{sent.message.what} at {sent.partition}/{sent.offset}"
            assert e["reason"] == report.reasons[(sent.partition, sent.offset)]
            assert base64.b64decode(e["raw_base64"]) == (sent.message.value or b"")
    assert len(envelopes) == MALFORMED
    clean_logs([log])
