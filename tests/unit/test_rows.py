"""sinks/rows.py and sinks/tables.py: the rows match the DDL, and the DDL is replay-safe."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import Rejected, decode
from schemas.events import Call, Purchase, Refund, Survey, epoch_ms
from sinks.rows import clock_row, dead_letter_row, event_row, state_row
from sinks.tables import (
    CUSTOMER_STATE,
    DEAD_LETTERS,
    EVENTS,
    STREAM_CLOCK,
    TABLES,
)
from tests.steps import step
from touchstream.domain.customer import CustomerState

WHEN = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
COMMON = {"event_id": "e1", "customer_id": "c1", "occurred_at": WHEN}


def column(table, row, name):
    return row[table.column_names.index(name)]


def test_event_row_puts_type_specific_fields_into_the_attributes_json():
    ev = Purchase(
        type="purchase",
        amount=Decimal("11.77"),
        currency="EUR",
        order_id="o-1",
        discount=0.25,
        channel="web",
        source="pos",
        **COMMON,
    )
    row = event_row(ev, version=3, partition=1, offset=42)
    assert len(row) == len(EVENTS.columns)
    assert json.loads(column(EVENTS, row, "attributes")) == {
        "order_id": "o-1",
        "discount": 0.25,
        "channel": "web",
    }
    assert column(EVENTS, row, "amount") == Decimal("11.77")
    assert column(EVENTS, row, "currency") == "EUR"
    assert column(EVENTS, row, "source") == "pos"
    assert column(EVENTS, row, "type") == "purchase"
    assert column(EVENTS, row, "occurred_at") == epoch_ms(datetime(2024, 3, 1, 10, 0, tzinfo=UTC))
    assert (
        column(EVENTS, row, "kafka_partition"),
        column(EVENTS, row, "kafka_offset"),
        column(EVENTS, row, "version"),
    ) == (1, 42, 3)


def test_event_row_gives_non_money_events_amount_zero_and_no_currency():
    ev = Call(
        type="call",
        direction="outbound",
        reason="billing",
        duration_s=90.5,
        resolved=False,
        **COMMON,
    )
    row = event_row(ev, version=1, partition=0, offset=0)
    assert column(EVENTS, row, "amount") == Decimal(0)
    assert column(EVENTS, row, "currency") == ""
    assert column(EVENTS, row, "source") == ""
    assert json.loads(column(EVENTS, row, "attributes")) == {
        "direction": "outbound",
        "reason": "billing",
        "duration_s": 90.5,
        "wait_s": 0,
        "resolved": False,
    }


def test_event_row_keeps_the_refund_amount_and_its_reason_in_attributes():
    ev = Refund(type="refund", amount=Decimal("3.50"), reason="price", **COMMON)
    row = event_row(ev, version=1, partition=0, offset=0)
    assert column(EVENTS, row, "amount") == Decimal("3.50")
    assert json.loads(column(EVENTS, row, "attributes")) == {"reason": "price"}


def test_event_row_attributes_never_repeat_the_common_columns():
    ev = Survey(type="survey", satisfaction="neutral", source="app", **COMMON)
    attributes = json.loads(column(EVENTS, event_row(ev, 1, 0, 0), "attributes"))
    assert attributes == {"satisfaction": "neutral"}
    assert not set(attributes) & set(EVENTS.column_names)


@pytest.mark.parametrize("with_purchase", [True, False])
def test_state_row_has_one_value_per_customer_state_column(with_purchase):
    ev = (
        Purchase(type="purchase", amount=Decimal(5), currency="EUR", **COMMON)
        if with_purchase
        else Survey(type="survey", satisfaction="neutral", **COMMON)
    )
    s, _ = step(None, ev)
    row = state_row(s)
    assert len(row) == len(CUSTOMER_STATE.columns)
    assert column(CUSTOMER_STATE, row, "customer_id") == "c1"
    assert column(CUSTOMER_STATE, row, "version") == 1
    assert column(CUSTOMER_STATE, row, "purchases") == int(with_purchase)
    first = column(CUSTOMER_STATE, row, "first_purchase_at")
    assert (first is not None) == with_purchase
    assert column(CUSTOMER_STATE, row, "last_event_at") == epoch_ms(WHEN)


def test_state_row_carries_the_lifetimes_summary_in_its_named_columns():
    s = CustomerState(
        customer_id="c",
        version=4,
        purchases=4,
        purchase_total=Decimal(31),
        refund_total=Decimal(2),
        purchase_days=(10, 12, 14),
        first_day_spend=Decimal(15),
        first_purchase_ms=10 * 86_400_000,
        last_purchase_ms=14 * 86_400_000,
    )
    row = state_row(s)
    assert column(CUSTOMER_STATE, row, "frequency") == 2
    assert column(CUSTOMER_STATE, row, "recency") == 4
    assert column(CUSTOMER_STATE, row, "monetary_value") == 8.0
    assert column(CUSTOMER_STATE, row, "net_spend") == Decimal(29)


def test_dead_letter_and_clock_rows_match_their_tables():
    received = datetime(2024, 3, 1, tzinfo=UTC)
    dl = dead_letter_row("t", 1, 2, None, b"\xffx", "bad", received)
    assert len(dl) == len(DEAD_LETTERS.columns)
    assert column(DEAD_LETTERS, dl, "key") == ""
    assert column(DEAD_LETTERS, dl, "raw") == "\ufffdx"
    assert column(DEAD_LETTERS, dl, "received_at") == received
    clock = clock_row(3, 1_709_251_200_000)
    assert len(clock) == len(STREAM_CLOCK.columns)
    assert column(STREAM_CLOCK, clock, "stream_time") == epoch_ms(received)
    assert column(STREAM_CLOCK, clock, "version") == 1_709_251_200_000


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name)
def test_every_table_is_a_replacing_merge_tree_on_a_version_column(table):
    ddl = table.ddl("db")
    assert "ReplacingMergeTree(version)" in ddl
    assert "`version` UInt64" in ddl
    assert dict(table.columns)["version"] == "UInt64"


def test_a_configured_segment_map_goes_into_the_scores_view():
    from sinks.tables import scores_view

    everyone_vip = [["vip"] * 5 for _ in range(5)]
    assert "'vip'" in scores_view("db", everyone_vip)
    assert "'champions'" not in scores_view("db", everyone_vip)
    assert "'champions'" in scores_view("db")


def _attributes_by_pydantic(ev) -> dict:
    common = {"event_id", "customer_id", "type", "occurred_at", "source", "amount", "currency"}
    return {
        k: v for k, v in ev.model_dump(mode="json", exclude_none=True).items() if k not in common
    }


texts = st.text(min_size=1, max_size=8).filter(lambda s: s.strip())
numbers = st.integers(0, 10**6) | st.floats(0, 10**6) | st.sampled_from(["7", "1e2", "inf"])


@st.composite
def raw_events(draw) -> dict:
    """JSON objects of every event type, optional fields sent, null or left out."""
    kind = draw(st.sampled_from(["purchase", "call", "complaint", "refund", "survey", "account"]))
    e = {
        "event_id": "e1",
        "customer_id": "c1",
        "type": kind,
        "occurred_at": "2024-03-01T12:00:00+02:00",
    }
    fields = {
        "purchase": {
            "amount": st.just("1.50"),
            "currency": st.just("EUR"),
            "order_id": st.none() | texts,
            "discount": st.none() | st.floats(0, 1),
            "category": st.none() | texts,
            "channel": st.none() | texts,
        },
        "call": {
            "direction": st.sampled_from(["inbound", "outbound"]),
            "reason": st.sampled_from(["price", "billing"]),
            "duration_s": numbers,
            "wait_s": numbers,
            "resolved": st.booleans() | st.just("yes"),
        },
        "complaint": {
            "complaint_id": texts,
            "category": st.just("service"),
            "severity": st.integers(1, 5) | st.just(2.0),
            "status": st.just("open"),
        },
        "refund": {"amount": st.just(3), "order_id": st.none() | texts, "reason": st.just("price")},
        "survey": {"satisfaction": st.just("neutral")},
        "account": {"change": st.just("moved")},
    }[kind]
    for name, values in fields.items():
        if draw(st.booleans()) or name in (
            "amount",
            "currency",
            "direction",
            "reason",
            "duration_s",
            "resolved",
            "complaint_id",
            "category",
            "severity",
            "status",
            "satisfaction",
            "change",
        ):
            e[name] = draw(values)
    return e


@settings(max_examples=300, deadline=None)
@given(obj=raw_events())
def test_event_row_attributes_are_what_pydantic_json_mode_gives(obj):
    ev = decode(orjson.dumps(obj))
    if isinstance(ev, Rejected):
        return
    attributes = column(EVENTS, event_row(ev, 1, 0, 0), "attributes")
    assert attributes == orjson.dumps(_attributes_by_pydantic(ev)).decode()


def test_every_datetime_column_of_the_worker_rows_is_epoch_milliseconds():
    from agents.processor import Processor
    from agents.records import RawMessage
    from sinks.tables import BY_NAME

    def purchase(i: int, day: int) -> RawMessage:
        e = {
            "event_id": f"e{i}",
            "customer_id": "c1",
            "type": "purchase",
            "amount": "900",
            "currency": "EUR",
            "occurred_at": f"2024-03-{day:02d}T12:00:00.250+02:00",
        }
        return RawMessage("t", 0, i, b"c1", orjson.dumps(e))

    proc, table = Processor(), {}
    seen: dict[str, list] = {}
    batches = [[purchase(i, 1 + 3 * i) for i in range(6)], [RawMessage("t", 0, 6, b"c1", b"x")]]
    for i, batch in enumerate(batches):
        wall = epoch_ms(WHEN) + 400 * 86_400_000 if i else None  # silence: decline, churn
        r = proc.process(
            batch, table.get, datetime(2024, 5, 1, tzinfo=UTC), wall_ms=wall, partitions=[0]
        )
        table.update(r.states)
        for name, rows in r.rows.items():
            seen.setdefault(name, []).extend(rows)
    assert all(
        seen[name]
        for name in (
            "events",
            "customer_state",
            "transitions",
            "alerts",
            "dead_letters",
            "stream_clock",
        )
    )
    for name, rows in seen.items():
        columns = [i for i, (_, ty) in enumerate(BY_NAME[name].columns) if "DateTime" in ty]
        for row in rows:
            assert all(type(row[i]) is int or row[i] is None for i in columns), (name, row)
    assert seen["events"][0][3] == epoch_ms(datetime(2024, 3, 1, 10, 0, 0, 250_000, UTC))


def test_every_event_types_attributes_are_read_without_pydantics_serializer():
    from sinks.rows import _ROW_SHAPE

    assert [cls.__name__ for cls, (_, _, fields) in _ROW_SHAPE.items() if fields is None] == []
