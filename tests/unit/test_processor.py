"""agents/processor.py: one batch of raw Kafka messages -> states, rows and dead letters.

The table is a dict: ``load`` reads it and the test writes ``BatchResult.states`` back,
as the Faust agent does with its changelogged table.
"""

from __future__ import annotations

import base64
import json
import zlib
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.processor import Processor
from agents.records import BatchResult, RawMessage, Stored
from schemas.events import epoch_ms
from sinks.tables import CUSTOMER_STATE, DEAD_LETTERS, EVENTS, STREAM_CLOCK
from touchstream.domain import codec
from touchstream.domain.customer import CustomerState

TOPIC = "touchpoints"
BASE = datetime(2024, 3, 1, tzinfo=UTC)
RECEIVED = datetime(2024, 3, 2, tzinfo=UTC)


def event(
    cid: str, eid: str, minutes: int = 0, type_: str = "purchase", amount: str = "10.00"
) -> dict[str, Any]:
    common = {
        "event_id": eid,
        "customer_id": cid,
        "occurred_at": (BASE + timedelta(minutes=minutes)).isoformat(),
    }
    if type_ == "purchase":
        return {**common, "type": "purchase", "amount": amount, "currency": "EUR"}
    return {**common, "type": "survey", "satisfaction": "satisfied"}


def msg(obj: Any, offset: int, partition: int = 0, key: str | bytes | None = None) -> RawMessage:
    value = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    if key is None and isinstance(obj, dict):
        key = obj["customer_id"]
    if isinstance(key, str):
        key = key.encode()
    return RawMessage(TOPIC, partition, offset, key, value)


class Table:
    """The dict-backed table the processor reads through ``load``."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.loads: list[str] = []

    def load(self, cid: str) -> bytes | None:
        self.loads.append(cid)
        return self.data.get(cid)

    def run(self, proc: Processor, messages: list[RawMessage]) -> BatchResult:
        result = proc.process(messages, self.load, RECEIVED)
        self.data.update(result.states)
        return result

    def state(self, cid: str) -> CustomerState:
        return Stored.decode(self.data[cid]).state


def test_valid_messages_produce_one_events_row_each():
    table, proc = Table(), Processor()
    messages = [msg(event("a", f"e{i}", i), i) for i in range(3)]
    result = table.run(proc, messages)
    assert result.accepted == 3
    assert result.rejected == result.duplicates == result.redelivered == 0
    rows = result.rows["events"]
    assert [r[0] for r in rows] == ["e0", "e1", "e2"]
    assert all(len(r) == len(EVENTS.columns) for r in rows)
    assert [r[-1] for r in rows] == [1, 2, 3]  # the state version each event made
    assert [(r[-3], r[-2]) for r in rows] == [(0, 0), (0, 1), (0, 2)]  # partition, offset


def test_one_customer_state_row_per_changed_customer_per_batch_not_per_event():
    table, proc = Table(), Processor()
    messages = [
        msg(event("a", "a1", 1), 0),
        msg(event("b", "b1", 2), 1),
        msg(event("a", "a2", 3, "survey"), 2),
        msg(event("a", "a3", 4), 3),
        msg(event("b", "b2", 5), 4),
    ]
    result = table.run(proc, messages)
    rows = result.rows["customer_state"]
    assert sorted((r[0], r[1]) for r in rows) == [("a", 3), ("b", 2)]  # (customer, version)
    assert all(len(r) == len(CUSTOMER_STATE.columns) for r in rows)
    assert set(result.states) == {"a", "b"}
    assert table.state("a").purchases == 2
    assert sorted(table.loads) == ["a", "b"]  # each customer loaded once per batch


def test_a_stream_clock_row_per_partition_carries_the_max_event_time_of_that_partition():
    table, proc = Table(), Processor()
    messages = [
        msg(event("a", "a1", 30), 0, partition=0),
        msg(event("a", "a2", 10), 1, partition=0),  # late: does not move the clock back
        msg(event("b", "b1", 5), 0, partition=1),
        msg(event("b", "b2", 20), 1, partition=1),
    ]
    result = table.run(proc, messages)
    clocks = {r[0]: r for r in result.rows["stream_clock"]}
    assert set(clocks) == {0, 1}
    # stream_time (DateTime) and version, both as epoch milliseconds
    assert clocks[0][1:] == (epoch_ms(BASE) + 30 * 60_000,) * 2
    assert clocks[1][1:] == (epoch_ms(BASE) + 20 * 60_000,) * 2
    assert all(len(r) == len(STREAM_CLOCK.columns) for r in clocks.values())
    # A later batch whose events are all older writes no clock row for that partition.
    later = table.run(proc, [msg(event("a", "a3", 1), 2, partition=0)])
    assert later.rows["stream_clock"] == []
    assert proc.stream_time == {0: clocks[0][2], 1: clocks[1][2]}


def test_a_malformed_message_yields_a_dead_letter_row_and_a_dlq_envelope():
    table, proc = Table(), Processor()
    bad = b'{"type": "purchase", '
    result = table.run(proc, [msg(bad, 7, partition=2, key="a")])
    assert result.rejected == 1 and result.accepted == 0
    assert result.rows["events"] == [] and result.rows["customer_state"] == []
    assert result.states == {}

    [row] = result.rows["dead_letters"]
    assert len(row) == len(DEAD_LETTERS.columns)
    topic, partition, offset, key, raw, reason, received_at, version = row
    assert (topic, partition, offset, key, raw) == (TOPIC, 2, 7, "a", bad.decode())
    assert "not valid JSON" in reason
    assert received_at == epoch_ms(RECEIVED) and version == 1

    [(dlq_key, envelope)] = result.dead_letters
    assert dlq_key == b"a"
    env = orjson.loads(envelope)
    assert env["reason"] == reason
    assert (env["topic"], env["partition"], env["offset"]) == (TOPIC, 2, 7)
    assert env["raw"] == bad.decode()
    assert base64.b64decode(env["raw_base64"]) == bad


def test_a_message_that_is_not_utf8_keeps_its_exact_bytes_in_the_dlq_envelope():
    table, proc = Table(), Processor()
    bad = b"\xff\xfe not text"
    result = table.run(proc, [msg(bad, 0, key="a")])
    [(_, envelope)] = result.dead_letters
    env = orjson.loads(envelope)
    assert env["raw"] is None
    assert base64.b64decode(env["raw_base64"]) == bad
    assert result.rejected == 1


def test_a_message_whose_key_differs_from_its_customer_id_is_dead_lettered_naming_the_key():
    table, proc = Table(), Processor()
    result = table.run(proc, [msg(event("a", "e1"), 0, key="someone-else")])
    assert result.rejected == 1 and result.accepted == 0
    [(_, envelope)] = result.dead_letters
    reason = orjson.loads(envelope)["reason"]
    assert "'someone-else'" in reason
    assert "'a'" in reason
    assert result.rows["dead_letters"][0][5] == reason
    assert result.states == {}


def test_a_message_without_a_key_is_dead_lettered():
    table, proc = Table(), Processor()
    m = RawMessage(TOPIC, 0, 0, None, json.dumps(event("a", "e1")).encode())
    result = table.run(proc, [m])
    assert result.rejected == 1
    assert "key" in orjson.loads(result.dead_letters[0][1])["reason"]


def test_a_redelivered_message_is_skipped_and_counted_even_with_a_new_event_id():
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", f"e{i}", i), i) for i in range(3)])
    before = table.data["a"]

    redelivered = [
        msg(event("a", "e1", 1), 1),  # the same message again
        msg(event("a", "fresh-id", 2, amount="99.00"), 2),  # re-produced under a new id
    ]
    result = table.run(proc, redelivered)
    assert result.redelivered == 2
    assert result.accepted == result.duplicates == 0
    assert result.rows["events"] == [] and result.rows["customer_state"] == []
    assert table.data["a"] == before
    assert table.state("a").purchases == 3


def test_a_duplicated_event_id_at_a_new_offset_counts_as_a_duplicate():
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0)])
    result = table.run(proc, [msg(event("a", "e1", 1), 1), msg(event("a", "e2", 2), 2)])
    assert result.duplicates == 1
    assert result.accepted == 1
    assert [r[0] for r in result.rows["events"]] == ["e2"]
    s = table.state("a")
    assert s.version == 2 and s.purchases == 2
    assert Stored.decode(table.data["a"]).offset == 2


def test_stored_encode_and_decode_round_trip():
    table, proc = Table(), Processor()
    table.run(
        proc,
        [
            msg(event("a", "e1", 1, amount="12.34"), 5, partition=3),
            msg(event("a", "e2", 60 * 50, amount="0.66"), 6, partition=3),
        ],
    )
    stored = Stored.decode(table.data["a"])
    assert (stored.partition, stored.offset) == (3, 6)
    assert stored.state.purchase_total == Decimal("13.00")
    assert Stored.decode(stored.encode()) == stored
    assert stored.encode() == table.data["a"]
    assert Stored.partition_of(stored.encode()) == 3


# -- batching does not change the outcome ---------------------------------------------


@st.composite
def message_streams(draw) -> list[RawMessage]:
    """Messages for a few customers, each always on the same partition, offsets in order,
    with duplicated event ids, a malformed message now and then, and key mismatches."""
    n = draw(st.integers(1, 30))
    offsets: dict[int, int] = {}
    messages = []
    for i in range(n):
        cid = draw(st.sampled_from(["a", "b", "c", "d"]))
        partition = ord(cid) % 2
        offset = offsets.get(partition, 0)
        offsets[partition] = offset + 1
        kind = draw(st.sampled_from(["purchase", "survey", "duplicate", "garbage", "wrong key"]))
        eid = f"{cid}-{draw(st.integers(0, 3))}" if kind == "duplicate" else f"{cid}-e{i}"
        ev = event(
            cid,
            eid,
            draw(st.integers(0, 60 * 24 * 30)),
            "survey" if kind == "survey" else "purchase",
            str(draw(st.decimals(0, 500, places=2))),
        )
        if kind == "garbage":
            messages.append(msg(b"{oops", offset, partition, key=cid))
        else:
            messages.append(msg(ev, offset, partition, key="zz" if kind == "wrong key" else cid))
    return messages


def run_batches(batches: list[list[RawMessage]]) -> tuple[Table, Processor, dict[str, int]]:
    table, proc = Table(), Processor()
    counts = dict.fromkeys(["accepted", "duplicates", "redelivered", "rejected"], 0)
    for batch in batches:
        result = table.run(proc, batch)
        for k in counts:
            counts[k] += getattr(result, k)
    return table, proc, counts


@settings(max_examples=100, deadline=None)
@given(messages=message_streams(), data=st.data())
def test_the_same_messages_split_into_two_batches_give_the_same_final_state(messages, data):
    cut = data.draw(st.integers(0, len(messages)))
    one, proc_one, counts_one = run_batches([messages])
    two, proc_two, counts_two = run_batches([messages[:cut], messages[cut:]])
    assert {c: Stored.decode(b) for c, b in two.data.items()} == {
        c: Stored.decode(b) for c, b in one.data.items()
    }
    assert counts_two == counts_one
    assert proc_two.stream_time == proc_one.stream_time


@settings(max_examples=50, deadline=None)
@given(messages=message_streams(), data=st.data())
def test_redelivering_a_tail_of_the_stream_changes_no_state(messages, data):
    tail = messages[data.draw(st.integers(0, len(messages))) :]
    table, proc, _ = run_batches([messages])
    before = dict(table.data)
    result = table.run(proc, tail)
    assert table.data == before
    assert result.accepted == result.duplicates == 0
    assert result.redelivered + result.rejected == len(tail)
    assert result.rows["events"] == result.rows["customer_state"] == []


def crc32_partition(key: bytes, n: int) -> int:
    """librdkafka's consistent / consistent_random partitioner (confluent-kafka, Go, .NET,
    kcat by default) for a keyed message."""
    return zlib.crc32(key) % n


def test_a_stream_partitioned_by_crc32_as_librdkafka_clients_do_is_accepted_whole():
    from kafka.partitioner.default import murmur2

    customers = [f"c{i}" for i in range(40)]
    elsewhere = [
        c
        for c in customers
        if crc32_partition(c.encode(), 4) != (murmur2(c.encode()) & 0x7FFFFFFF) % 4
    ]
    assert len(elsewhere) > 20  # most land where murmur2 would not put them
    offsets = [0] * 4
    messages = []
    for i in range(200):
        cid = customers[i % len(customers)]
        p = crc32_partition(cid.encode(), 4)
        messages.append(msg(event(cid, f"e{i}", i), offsets[p], partition=p))
        offsets[p] += 1
    table, proc = Table(), Processor(partitions=4)
    result = table.run(proc, messages[:120])
    result2 = table.run(proc, messages[120:])
    assert result.rejected == result2.rejected == 0
    assert result.accepted + result2.accepted == 200
    assert {Stored.decode(table.data[c]).partition for c in customers} == {0, 1, 2, 3}
    assert proc.population().count == 40


@settings(max_examples=50, deadline=None)
@given(
    st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 3), min_size=1),
    st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=40),
)
def test_any_partitioner_that_keeps_each_customer_on_one_partition_is_accepted(home, order):
    order = [c for c in order if c in home]
    offsets = [0] * 4
    messages = []
    for i, cid in enumerate(order):
        p = home[cid]
        messages.append(msg(event(cid, f"e{i}", i), offsets[p], partition=p))
        offsets[p] += 1
    result = Table().run(Processor(partitions=4), messages)
    assert (result.accepted, result.rejected) == (len(order), 0)


def test_an_event_the_domain_cannot_process_is_dead_lettered_not_raised(monkeypatch):
    from agents import processor

    def broken(*_args, **_kw):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(processor, "apply", broken)  # a stand-in for a bug in the domain
    result = Table().run(Processor(), [msg(event("a", "e1", 0), 0)])
    assert result.rejected == 1 and result.accepted == 0
    assert (
        "could not be processed: ZeroDivisionError"
        in orjson.loads(result.dead_letters[0][1])["reason"]
    )


def test_an_event_that_fails_half_applied_leaves_its_customer_as_the_earlier_events_made_it(
    monkeypatch,
):
    from agents import processor

    real = processor.apply

    def half_then_boom(work, ev, t, rules):
        if ev.event_id == "e2":
            work.purchases += 100  # a bug that changed the working copy, then raised
            raise ZeroDivisionError("boom")
        return real(work, ev, t, rules)

    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e0", 0), 0)])
    monkeypatch.setattr(processor, "apply", half_then_boom)
    result = table.run(proc, [msg(event("a", f"e{i}", i), i) for i in (1, 2, 3)])
    assert (result.accepted, result.rejected) == (2, 1)

    expected, proc = Table(), Processor()
    expected.run(proc, [msg(event("a", "e0", 0), 0)])
    expected.run(proc, [msg(event("a", f"e{i}", i), i) for i in (1, 3)])
    assert table.state("a") == expected.state("a")
    assert table.state("a").purchases == 3


# -- the decoded-state cache -------------------------------------------------------------


def count_decodes(monkeypatch) -> list[str]:
    """The customers whose stored bytes the pipeline decodes, in order."""
    from agents import processor

    real, seen = processor.codec.decode, []

    def counting(raw):
        work, partition, offset = real(raw)
        seen.append(work.customer_id)
        return work, partition, offset

    monkeypatch.setattr(processor.codec, "decode", counting)
    return seen


def test_a_customer_of_a_recent_batch_is_not_decoded_from_its_bytes_again(monkeypatch):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0), msg(event("b", "e2", 2), 1)])
    table.run(proc, [msg(event("a", "e3", 3), 2)])
    table.run(proc, [msg(event("a", "e4", 4), 3), msg(event("b", "e5", 5), 4)])
    assert decoded == []
    assert table.state("a").purchases == 3 and table.state("b").purchases == 2


def test_equal_bytes_from_a_restored_table_still_use_the_cached_state(monkeypatch):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0)])
    table.data = {c: bytes(bytearray(raw)) for c, raw in table.data.items()}  # new objects
    table.run(proc, [msg(event("a", "e2", 2), 1)])
    assert decoded == []
    assert table.state("a").purchases == 2


def test_a_state_changed_in_the_table_by_someone_else_is_decoded_from_the_table(monkeypatch):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1, "survey"), 0)])
    older = table.data["a"]
    table.run(proc, [msg(event("a", "e2", 2, "survey"), 1)])
    table.data["a"] = older  # e.g. restored from a changelog that lost the latest write
    result = table.run(proc, [msg(event("a", "e3", 3, "survey"), 2)])
    assert decoded == ["a"]
    assert table.state("a").version == 2  # e1 and e3: what the table said, plus e3
    assert result.rows["customer_state"][0][1] == 2


def test_a_customer_deleted_from_the_table_starts_afresh_despite_the_cache():
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0)])
    del table.data["a"]
    table.run(proc, [msg(event("a", "e2", 2), 1)])
    assert table.state("a").purchases == 1 and table.state("a").version == 1


def test_the_cache_keeps_at_most_state_cache_customers_the_least_recently_used_go_first(
    monkeypatch,
):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor(state_cache=2)
    table.run(proc, [msg(event(c, f"{c}1", 1), i) for i, c in enumerate("abc")])
    assert len(proc._cache) == 2
    table.run(proc, [msg(event(c, f"{c}2", 2), 3 + i) for i, c in enumerate("cab")])
    assert decoded == ["a"]  # evicted as the least recently used; b and c were kept
    assert len(proc._cache) == 2
    assert [table.state(c).purchases for c in "abc"] == [2, 2, 2]


def test_a_processor_without_a_cache_decodes_every_customer_each_batch(monkeypatch):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor(state_cache=0)
    table.run(proc, [msg(event("a", "e1", 1), 0)])
    table.run(proc, [msg(event("a", "e2", 2), 1)])
    assert decoded == ["a"] and proc._cache == {}


def test_forgetting_partitions_drops_their_cached_states(monkeypatch):
    decoded = count_decodes(monkeypatch)
    table, proc = Table(), Processor()
    table.run(
        proc,
        [
            msg(event("a", "a1", 1, "survey"), 0, partition=0),
            msg(event("b", "b1", 1, "survey"), 0, partition=1),
        ],
    )
    proc.forget([1])
    assert set(proc._cache) == {"a"}
    table.run(
        proc,
        [
            msg(event("a", "a2", 2, "survey"), 1, partition=0),
            msg(event("b", "b2", 2, "survey"), 1, partition=1),
        ],
    )
    assert "b" in decoded and "a" not in decoded


def test_a_batch_that_fails_half_way_leaves_the_cache_consistent_with_the_table():
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0)])

    def broken_scan(_p):
        raise OSError("the table is gone")

    with suppress(OSError):  # the events of a were applied, then the batch failed: nothing stored
        proc.process(
            [msg(event("a", "e2", 2), 1)], table.load, RECEIVED, broken_scan, partitions=[7]
        )
    table.run(proc, [msg(event("a", "e2", 2), 1)])  # the redelivery
    assert table.state("a").purchases == 2 and table.state("a").version == 2


def test_a_long_purchase_history_is_cached_as_an_array_and_worked_on_as_a_list():
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", f"e{i}", i * 60 * 24), i) for i in range(40)])
    cached = proc._cache["a"][1]
    assert type(cached.purchase_days).__name__ == "array" and len(cached.purchase_days) == 40
    table.run(proc, [msg(event("a", "e40", 40 * 60 * 24), 40)])
    assert table.state("a").purchase_days == tuple(range(19783, 19783 + 41))
    fresh = Table()
    fresh.run(Processor(), [msg(event("a", f"e{i}", i * 60 * 24), i) for i in range(41)])
    assert fresh.data == table.data


# -- a customer on two partitions ----------------------------------------------------------


@pytest.mark.parametrize("partitions", [None, 4])
def test_a_customers_message_on_a_second_partition_is_dead_lettered_naming_both(partitions):
    table, proc = Table(), Processor(partitions=partitions)
    table.run(proc, [msg(event("a", "e1", 1), 0, partition=0)])
    before = table.data["a"]
    result = table.run(
        proc, [msg(event("a", "e2", 2), 0, partition=1), msg(event("b", "e3", 3), 1, partition=1)]
    )
    assert (result.accepted, result.rejected) == (1, 1)
    reason = orjson.loads(result.dead_letters[0][1])["reason"]
    assert "partition 1" in reason and "on partition 0" in reason and "'a'" in reason
    assert table.data["a"] == before
    assert proc.population().count == 2  # a and b, once each


def test_a_new_customer_on_two_partitions_in_one_batch_keeps_the_first():
    table, proc = Table(), Processor()
    result = table.run(
        proc, [msg(event("a", "e1", 1), 0, partition=0), msg(event("a", "e2", 2), 0, partition=1)]
    )
    assert (result.accepted, result.rejected) == (1, 1)
    assert Stored.decode(table.data["a"]).partition == 0
    assert proc.population().count == 1


def test_a_customer_whose_key_moved_with_a_new_partition_count_stays_on_its_partition():
    from kafka.partitioner.default import murmur2

    def scan_of(table: Table):
        return lambda p: [
            (c, raw) for c, raw in table.data.items() if Stored.partition_of(raw) == p
        ]

    cid = next(
        c
        for c in (f"c{i}" for i in range(100))
        if (murmur2(c.encode()) & 0x7FFFFFFF) % 4 != (murmur2(c.encode()) & 0x7FFFFFFF) % 8
    )
    old, new = ((murmur2(cid.encode()) & 0x7FFFFFFF) % n for n in (4, 8))
    table = Table()
    table.data.update(
        Processor(partitions=4)
        .process([msg(event(cid, "e1", 1), 0, partition=old)], table.load, RECEIVED)
        .states
    )
    before = table.data[cid]
    proc = Processor(partitions=8)  # restarted after the topic got 8 partitions
    result = proc.process(
        [msg(event(cid, "e2", 2), 0, partition=new)],
        table.load,
        RECEIVED,
        scan_of(table),
        partitions=[old],
    )
    assert (result.accepted, result.rejected) == (0, 1)
    assert (
        f"but customer {cid!r} is on partition {old}"
        in orjson.loads(result.dead_letters[0][1])["reason"]
    )
    assert cid not in result.states and table.data[cid] == before
    assert proc.sketches[old].count == 1 and proc.population().count == 1


def test_a_state_rolled_back_behind_the_workers_back_does_not_stop_the_batch(caplog):
    table, proc = Table(), Processor()
    table.run(proc, [msg(event("a", "e1", 1), 0)])
    older = table.data["a"]
    table.run(proc, [msg(event("a", "e2", 2), 1)])
    table.data["a"] = older  # the population still has a's point after e2
    result = table.run(proc, [msg(event("a", "e3", 3), 2)])
    assert result.accepted == 1 and table.state("a").purchases == 2
    assert proc.population().count >= 1
    assert "counted afresh" in caplog.text


# -- values the sinks cannot store -----------------------------------------------------------


def test_an_event_dated_more_than_the_skew_after_its_batch_was_received_is_dead_lettered():
    table, proc = Table(), Processor(max_future_skew_ms=86_400_000)
    ahead = {**event("a", "e2"), "occurred_at": "2024-03-03T00:00:00.001Z"}  # RECEIVED + 1 day
    result = table.run(proc, [msg(event("a", "e1"), 0), msg(ahead, 1)])
    assert (result.accepted, result.rejected) == (1, 1)
    reason = orjson.loads(result.dead_letters[0][1])["reason"]
    assert "2024-03-03T00:00:00.001Z" in reason and "clock" in reason
    assert result.rows["dead_letters"][0][2] == 1  # the offset of the message
    assert table.state("a").purchases == 1
    # Offline replays (no bound) take the same event.
    assert Table().run(Processor(), [msg(ahead, 1)]).accepted == 1


def near_the_limit(table: Table, cid: str, total: str, refunds: str = "0") -> None:
    """Store ``cid`` as a customer whose totals are already ``total`` and ``refunds``."""
    table.run(Processor(), [msg(event(cid, "seed"), 0)])
    work, partition, offset = codec.decode(table.data[cid])
    work.purchase_total, work.refund_total = Decimal(total), Decimal(refunds)
    table.data[cid] = codec.encode(work, partition, offset)


def test_a_purchase_that_would_take_the_total_past_what_clickhouse_stores_is_dead_lettered():
    table, proc = Table(), Processor()
    near_the_limit(table, "a", "99990000000000.0000")
    before = table.data["a"]
    big = {**event("a", "e1", 1), "amount": "10000000000"}  # total 10^14: one too many digits
    result = table.run(proc, [msg(big, 1), msg(event("a", "e2", 2, amount="0.99"), 2)])
    assert (result.accepted, result.rejected) == (1, 1)
    reason = orjson.loads(result.dead_letters[0][1])["reason"]
    assert "purchase_total" in reason and "100000000000000" in reason and "'a'" in reason
    assert table.state("a").purchase_total == Decimal("99990000000000.99")
    assert table.data["a"] != before and table.state("a").purchases == 2
    [row] = result.rows["customer_state"]
    purchase_total, net_spend = row[5], row[8]
    assert purchase_total == net_spend == Decimal("99990000000000.99")  # exact, storable


def test_a_refund_that_would_take_the_refund_total_past_the_limit_is_dead_lettered():
    table, proc = Table(), Processor()
    near_the_limit(table, "a", "10.00", refunds="99999999999999.0000")
    refund = {**event("a", "r1", 1), "type": "refund", "amount": "1", "reason": "other"}
    result = table.run(proc, [msg(refund, 1)])
    assert (result.accepted, result.rejected) == (0, 1)
    assert "refund_total" in orjson.loads(result.dead_letters[0][1])["reason"]
    assert table.state("a").refund_total == Decimal("99999999999999.0000")


def test_a_duplicate_of_an_event_counted_before_the_limit_is_a_duplicate_not_a_dead_letter():
    table, proc = Table(), Processor()
    near_the_limit(table, "a", "99999999999999.0000")
    result = table.run(proc, [msg(event("a", "seed"), 1)])  # the seed's id again
    assert (result.duplicates, result.rejected) == (1, 0)
