"""agents/metrics.py: the classes of dead-letter reasons, the health decision, and what the
metrics page shows from the worker's hooks. Every reason is made by the code that makes it
in the worker (decoder, processor, writer), so rewording one breaks a test here instead of
moving its dead letters into "other" unnoticed."""

from __future__ import annotations

import gc
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import agents.processor
from agents.metrics import (
    GC_BUCKETS,
    REASON_CLASSES,
    Condition,
    GcPauses,
    Metrics,
    health,
    reason_class,
)
from agents.processor import Processor
from agents.records import RawMessage
from schemas.decode import Rejected, decode
from sinks.errors import RowsRefused, SinkFatal, SinkTransient
from sinks.rows import alert_row, dead_letter_row, refused_row
from sinks.tables import MONEY_LIMIT
from touchstream.domain import codec
from touchstream.domain.alerts import Alert
from touchstream.domain.messages import CLOCK_KEY

RECEIVED = datetime(2024, 3, 2, tzinfo=UTC)


def purchase(cid: str, eid: str, at: datetime, amount: str = "10") -> dict[str, Any]:
    return {
        "event_id": eid,
        "customer_id": cid,
        "type": "purchase",
        "occurred_at": at.isoformat(),
        "amount": amount,
        "currency": "EUR",
    }


def msg(obj: Any, offset: int, partition: int = 0, key: bytes | None = None) -> RawMessage:
    value = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    if key is None and isinstance(obj, dict):
        key = obj["customer_id"].encode()
    return RawMessage("touchpoints", partition, offset, key, value)


def reasons_of(proc: Processor, messages: list[RawMessage], table: dict[str, bytes]) -> list[str]:
    """The dead letters' reasons the processor gives for a batch (the reason column)."""
    result = proc.process(messages, table.get, RECEIVED)
    table.update(result.states)
    return [row[5] for row in result.rows["dead_letters"]]


def decoded_reason(raw: bytes | None) -> str:
    r = decode(raw)
    assert isinstance(r, Rejected)
    return r.reason


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        (b"{not json", "malformed"),
        (None, "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"event_id": "e1"}', "invalid_event"),
        (b'{"specversion": "0.3", "id": "e1"}', "invalid_event"),
        (
            json.dumps(
                {**purchase("c1", "e1", RECEIVED), "occurred_at": "2024-03-01T10:00:00"}
            ).encode(),
            "invalid_event",
        ),
    ],
)
def test_the_decoders_reasons_fall_into_their_classes(raw: bytes | None, cls: str) -> None:
    assert reason_class(decoded_reason(raw)) == cls


def test_the_processors_reasons_fall_into_their_classes() -> None:
    proc, table = Processor(max_future_skew_ms=60_000), dict[str, bytes]()
    day = RECEIVED - timedelta(days=1)
    reasons = reasons_of(
        proc,
        [
            msg(purchase("c1", "e1", day), 0, key=b"someone-else"),
            msg(purchase("c1", "e2", day), 1),
            msg(purchase("c1", "e3", day), 0, partition=1),
            msg(purchase("c2", "e4", RECEIVED + timedelta(hours=1)), 2),
            RawMessage("touchpoints", 0, 3, CLOCK_KEY, b"not a clock"),
        ],
        table,
    )
    assert [reason_class(r) for r in reasons] == [
        "key_mismatch",
        "wrong_partition",
        "future_time",
        "invalid_clock",
    ]


def test_a_purchase_beyond_what_clickhouse_stores_is_an_amount_limit() -> None:
    proc, table = Processor(), dict[str, bytes]()
    day = RECEIVED - timedelta(days=1)
    assert reasons_of(proc, [msg(purchase("c1", "e1", day), 0)], table) == []
    work, partition, offset = codec.decode(table["c1"])
    work.purchase_total = MONEY_LIMIT - Decimal(1)  # a long-lived big account
    table["c1"] = codec.encode(work, partition, offset)
    (reason,) = reasons_of(Processor(), [msg(purchase("c1", "e2", day, "5"), 1)], table)
    assert reason_class(reason) == "amount_limit"


def test_an_event_the_domain_fails_on_is_a_processing_error(monkeypatch) -> None:
    def broken(*args: Any) -> None:  # stands in for a bug in the domain code
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(agents.processor, "apply", broken)
    day = RECEIVED - timedelta(days=1)
    (reason,) = reasons_of(Processor(), [msg(purchase("c1", "e1", day), 0)], {})
    assert reason_class(reason) == "processing_error"


def test_a_row_clickhouse_refused_is_its_own_class() -> None:
    row = dead_letter_row("touchpoints", 0, 1, b"c1", b"{}", "x", 0)
    refused = refused_row("dead_letters", row, "Code: 53. Type mismatch", RECEIVED)
    assert reason_class(refused[5]) == "clickhouse_refused"


@given(st.text(max_size=200))
def test_any_reason_maps_to_one_of_the_fixed_classes_never_to_its_text(reason: str) -> None:
    assert reason_class(reason) in REASON_CLASSES


def test_an_unknown_reason_is_other() -> None:
    assert reason_class("the moon is in the wrong phase") == "other"


# -- the health decision -----------------------------------------------------------------

RUNNING = Condition(
    now=1000.0,
    state="running",
    joined=True,
    rebalancing=False,
    recovering=False,
    partitions=4,
    last_batch=999.5,
    last_write=999.0,
    failing_since=None,
    write_error=None,
    fatal=None,
)


def test_a_running_worker_is_healthy_and_ready_and_says_how_fresh_its_work_is() -> None:
    status, body = health(RUNNING, failing_limit_s=60)
    assert status == 200
    assert body["healthy"] and body["ready"] and body["problems"] == []
    assert body["partitions_assigned"] == 4
    assert (body["last_batch_age_s"], body["last_clickhouse_write_age_s"]) == (0.5, 1.0)
    assert body["fatal_error"] is None and body["clickhouse_failing_s"] is None


def test_clickhouse_failing_within_the_limit_is_reported_but_still_healthy() -> None:
    c = replace(RUNNING, failing_since=970.0, write_error="Code: 210. Connection refused")
    status, body = health(c, failing_limit_s=60)
    assert status == 200 and body["healthy"]
    assert body["clickhouse_failing_s"] == 30.0
    assert body["clickhouse_error"] == "Code: 210. Connection refused"


def test_clickhouse_failing_beyond_the_limit_makes_the_worker_unhealthy() -> None:
    c = replace(RUNNING, failing_since=900.0, write_error="Code: 210. Connection refused")
    status, body = health(c, failing_limit_s=60)
    assert status == 503
    assert not body["healthy"] and not body["ready"]
    (problem,) = body["problems"]
    assert "failed for 100 s" in problem and "TOUCHSTREAM_HEALTH_CLICKHOUSE_FAILING_S" in problem
    assert "Connection refused" in problem


def test_a_fatal_error_makes_the_worker_unhealthy_and_names_the_error() -> None:
    fatal = "ClickHouse refused the worker's writes: Code: 60. Table t.events doesn't exist."
    status, body = health(replace(RUNNING, fatal=fatal, state="stopping"), failing_limit_s=60)
    assert status == 503
    assert body["fatal_error"] == fatal
    assert len(body["problems"]) == 2  # the error, and that it is stopping


@pytest.mark.parametrize("state", ["stopping", "shutdown", "crashed"])
def test_a_stopping_worker_is_unhealthy(state: str) -> None:
    assert health(replace(RUNNING, state=state), failing_limit_s=60)[0] == 503


@pytest.mark.parametrize(
    "change",
    [
        {"rebalancing": True},
        {"recovering": True},
        {"joined": False, "partitions": 0},  # not in the group yet
        {"state": "init"},
    ],
)
def test_a_worker_between_assignments_is_healthy_but_not_ready(change: dict[str, Any]) -> None:
    status, body = health(replace(RUNNING, **change), failing_limit_s=60)
    assert status == 200 and body["healthy"] and not body["ready"]


def test_a_worker_with_no_partitions_of_its_own_is_a_healthy_standby() -> None:
    status, body = health(replace(RUNNING, partitions=0, last_batch=None), failing_limit_s=60)
    assert status == 200 and body["ready"] and body["last_batch_age_s"] is None


# -- the metrics the hooks feed ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def an_alert(kind: str) -> Alert:
    return Alert(
        alert_id=f"c1/1/{kind}",
        customer_id="c1",
        at_ms=0,
        kind=kind,
        episode=1,
        stage="decline",
        previous_stage="stability",
        defection_type="unknown",
        confidence=0.5,
        severity=1,
        net_spend=Decimal(10),
        last_purchase_ms=None,
        evidence=(),
        message="",
        version=1,
    )


def test_dead_letters_are_counted_by_class_and_alerts_by_kind_from_a_batchs_rows() -> None:
    m = Metrics(failing_limit_s=60)
    dead = [
        dead_letter_row("t", 0, i, b"k", b"x", decoded_reason(b"{bad"), 0) for i in range(2)
    ] + [dead_letter_row("t", 0, 9, b"k", b"{}", decoded_reason(b'{"a": 1}'), 0)]
    m.effects_done({"dead_letters": dead, "alerts": [alert_row(an_alert("decline"))]})
    got = samples(m)
    assert got[("touchstream_dead_letters_total", (("reason", "malformed"),))] == 2
    assert got[("touchstream_dead_letters_total", (("reason", "invalid_event"),))] == 1
    assert got[("touchstream_dead_letters_total", (("reason", "other"),))] == 0
    assert got[("touchstream_alerts_total", (("kind", "decline"),))] == 1
    assert got[("touchstream_alerts_total", (("kind", "churned"),))] == 0
    # Every class has a series from the start, so rate() sees the first dead letter.
    reasons = {dict(k[1]).get("reason") for k in got if k[0] == "touchstream_dead_letters_total"}
    assert reasons == set(REASON_CLASSES)


def test_each_worker_has_its_own_registry() -> None:
    one, other = Metrics(failing_limit_s=60), Metrics(failing_limit_s=60)
    row = dead_letter_row("t", 0, 1, b"k", b"x", decoded_reason(b"{bad"), 0)
    one.effects_done({"dead_letters": [row]})
    key = ("touchstream_dead_letters_total", (("reason", "malformed"),))
    assert (samples(one)[key], samples(other)[key]) == (1, 0)


def test_inserts_feed_the_latency_histogram_and_the_failing_clock() -> None:
    clock = Clock()
    m = Metrics(failing_limit_s=10, clock=clock)
    m.insert("events", 100, 0.02, None)
    clock.t = 101.0
    m.insert("events", 100, 1.0, SinkTransient("Code: 210. Connection refused"))
    clock.t = 105.0
    m.insert("events", 100, 1.0, SinkTransient("Code: 210. Connection refused"))
    m.insert("events", 1, 0.1, RowsRefused("Code: 53. Type mismatch"))  # rows, not the server
    assert m.health()[1]["clickhouse_failing_s"] == 4.0  # since the first failure
    clock.t = 112.0
    status, body = m.health()
    assert status == 503 and "Connection refused" in body["problems"][0]
    got = samples(m)
    assert got[("touchstream_clickhouse_insert_seconds_count", (("table", "events"),))] == 1
    assert got[("touchstream_clickhouse_insert_failures_total", (("kind", "transient"),))] == 2
    assert got[("touchstream_clickhouse_insert_failures_total", (("kind", "refused"),))] == 1
    assert got[("touchstream_healthy", ())] == 0
    clock.t = 113.0
    m.insert("events", 100, 0.03, None)  # back: healthy again at once
    assert m.health()[0] == 200
    assert m.health()[1]["last_clickhouse_write_age_s"] == 0.0


def test_a_fatal_insert_counts_as_failing_too() -> None:
    m = Metrics(failing_limit_s=10, clock=Clock())
    m.insert("events", 1, 0.01, SinkFatal("Code: 516. Authentication failed"))
    got = samples(m)
    assert got[("touchstream_clickhouse_insert_failures_total", (("kind", "fatal"),))] == 1


# -- what the scrape reads from the processor and the writer ----------------------------


def test_the_processor_counts_its_customers_and_pending_deadlines_per_partition() -> None:
    day = RECEIVED - timedelta(days=1)
    table: dict[str, bytes] = {}
    first = Processor()
    reasons_of(
        first,
        [
            msg(purchase("c1", "e1", day), 0),
            msg(purchase("c1", "e2", day), 1),  # not a new customer
            msg(purchase("c2", "e3", day), 0, partition=1),
        ],
        table,
    )
    assert first.customers_held() == 2
    assert first.deadlines_pending() == 2  # each buyer has a silence deadline
    reasons_of(first, [msg(purchase("c3", "e4", day), 2)], table)
    assert first.customers_held() == 3

    def scan(p: int) -> list[tuple[str, bytes]]:
        return [(c, raw) for c, raw in table.items() if codec.partition_of(raw) == p]

    # A worker that gets the partitions later counts what their table holds.
    later = Processor()
    result = later.process([msg(purchase("c4", "e5", day), 0)], table.get, RECEIVED, scan)
    assert later.customers_held() == 3  # c1, c3 on partition 0, and c4; partition 1 unseen
    table.update(result.states)
    later.forget([0])
    assert later.customers_held() == 0


def test_the_writer_counts_rows_per_table_and_tells_of_each_insert() -> None:
    from sinks.base import BatchingWriter

    from .test_writer import RuleSink, event_row

    seen: list[tuple[str, int, bool]] = []
    sink = RuleSink(lambda table, r: table == "events" and r[9] == 3)
    writer = BatchingWriter(sink, on_insert=lambda t, n, s, err: seen.append((t, n, err is None)))
    writer.add("events", [event_row(i) for i in range(8)])
    writer.add("stream_clock", [(0, 0, 1)])
    assert writer.flush() == 8
    assert writer.written_by_table == {"events": 7, "stream_clock": 1, "dead_letters": 1}
    assert writer.refused_by_table == {"events": 1}
    assert seen[0] == ("events", 8, False)  # refused, then halved
    assert ("stream_clock", 1, True) in seen and ("dead_letters", 1, True) in seen


def test_the_process_series_are_there_for_restarts_and_memory() -> None:
    got = samples(Metrics(failing_limit_s=60))
    assert got[("process_start_time_seconds", ())] > 0
    assert got[("process_resident_memory_bytes", ())] > 0


# -- garbage collection pauses -----------------------------------------------------------


def test_a_forced_collection_is_observed_as_a_full_collection_pause() -> None:
    def full(m: Metrics) -> tuple[float, float, float]:
        got = samples(m)
        key = (("generation", "2"),)
        return (
            got[("touchstream_gc_pause_seconds_count", key)],
            got[("touchstream_gc_pause_seconds_sum", key)],
            got[("touchstream_gc_pause_seconds_bucket", (("generation", "2"), ("le", "+Inf")))],
        )

    m = Metrics(failing_limit_s=60)
    count, total, inf = full(m)
    gc.collect()
    after = full(m)
    assert after[0] == count + 1 and after[2] == inf + 1
    assert after[1] > total
    # Every generation has its series from the start, with buckets from 1 ms to 1 s.
    got = samples(m)
    counts = [dict(k[1]) for k in got if k[0] == "touchstream_gc_pause_seconds_count"]
    assert sorted(c["generation"] for c in counts) == ["0", "1", "2"]
    les = [
        dict(k[1])["le"]
        for k in got
        if k[0] == "touchstream_gc_pause_seconds_bucket" and dict(k[1])["generation"] == "0"
    ]
    assert les == [*(str(b) for b in GC_BUCKETS), "+Inf"]


def test_gc_pauses_fall_into_their_buckets_and_the_callback_is_installed_once() -> None:
    pauses = GcPauses()
    for seconds in (0.0005, 0.001, 0.003, 0.3, 2.0):
        pauses.observe(1, seconds)
    buckets = {
        s.labels["le"]: s.value
        for s in pauses.metric().samples
        if s.name.endswith("_bucket") and s.labels["generation"] == "1"
    }
    assert (buckets["0.001"], buckets["0.005"], buckets["0.5"], buckets["1.0"]) == (2, 3, 4, 4)
    assert buckets["+Inf"] == 5
    try:
        pauses.install()
        pauses.install()
        assert gc.callbacks.count(pauses.callback) == 1
    finally:
        pauses.remove()
    assert pauses.callback not in gc.callbacks


def test_the_worker_collector_freezes_what_each_batch_leaves_only_once_it_is_on() -> None:
    import gc

    from agents import metrics

    before = gc.get_threshold()
    try:
        metrics.after_batch()  # off: tests and tools keep CPython's collector
        assert gc.get_freeze_count() == 0
        metrics.worker_gc()
        assert gc.get_threshold() == metrics.GC_THRESHOLD
        kept = [[i] for i in range(1000)]  # what a batch leaves alive
        frozen = gc.get_freeze_count()
        metrics.after_batch()
        assert gc.get_freeze_count() >= frozen + len(kept)
        metrics.full_collection()
        assert gc.get_freeze_count() > 0 and gc.get_count()[0] < 100
    finally:
        metrics.stop_worker_gc()
        gc.unfreeze()
        gc.set_threshold(*before)
    metrics.after_batch()
    assert gc.get_freeze_count() == 0


def test_the_gc_pauses_count_the_cycles_each_generation_freed() -> None:
    pauses = GcPauses()
    pauses.callback("start", {"generation": 2, "collected": 0})
    pauses.callback("stop", {"generation": 2, "collected": 7})
    pauses.callback("start", {"generation": 0, "collected": 0})
    pauses.callback("stop", {"generation": 0, "collected": 3})
    assert pauses.collected == [3, 0, 7]


def test_a_freed_cycle_shows_in_the_scraped_count_of_collected_objects() -> None:
    def scraped() -> float:
        text = Metrics(failing_limit_s=60).exposition().decode()
        line = next(
            x
            for x in text.splitlines()
            if x.startswith('touchstream_gc_collected_objects_total{generation="2"}')
        )
        return float(line.split()[-1])

    before = scraped()
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    gc.collect()
    assert scraped() >= before + 1
