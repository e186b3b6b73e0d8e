"""The event contract: what schemas/decode.py accepts, what it rejects and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.decode import Rejected, decode
from schemas.events import (
    AMOUNT_MAX,
    SATISFACTION_LEVELS,
    Account,
    Call,
    Complaint,
    Purchase,
    Refund,
    Survey,
    epoch_ms,
)
from touchstream.schema_export import SCHEMA_PATH, event_json_schema, render

ROOT = Path(__file__).resolve().parents[2]

COMMON: dict[str, Any] = {
    "event_id": "evt-1",
    "customer_id": "cust-1",
    "occurred_at": "2024-03-01T10:15:00Z",
    "source": "pos",
}

VALID: dict[str, dict[str, Any]] = {
    "purchase": {"amount": "11.77", "currency": "EUR", "order_id": "o-1", "discount": 0.1},
    "call": {"direction": "inbound", "reason": "billing", "duration_s": 120, "resolved": True},
    "complaint": {"complaint_id": "k-1", "category": "service", "severity": 3, "status": "open"},
    "refund": {"amount": "5.00", "reason": "defective", "order_id": "o-1"},
    "survey": {"satisfaction": "satisfied"},
    "account": {"change": "moved"},
}
MODELS = {
    "purchase": Purchase,
    "call": Call,
    "complaint": Complaint,
    "refund": Refund,
    "survey": Survey,
    "account": Account,
}


def message(type_: str = "purchase", **changes: Any) -> dict[str, Any]:
    """A valid plain-form message of one type; a change to None removes the field."""
    msg = {**COMMON, "type": type_, **VALID[type_], **changes}
    return {k: v for k, v in msg.items() if v is not None}


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def rejected(obj: Any) -> str:
    """The reason a message is rejected (fails the test when it is accepted)."""
    result = decode(raw(obj))
    assert isinstance(result, Rejected), f"expected a rejection, got {result!r}"
    return result.reason


# -- accepted ------------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(VALID))
def test_each_event_type_decodes_from_a_valid_json_message(type_):
    ev = decode(raw(message(type_)))
    assert isinstance(ev, MODELS[type_])
    assert ev.type == type_
    assert ev.event_id == "evt-1"
    assert ev.customer_id == "cust-1"
    assert ev.occurred_at == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)
    assert ev.source == "pos"


@pytest.mark.parametrize("amount", ["11.77", 11.77])
def test_amount_is_accepted_as_string_or_number_and_kept_exact_as_decimal(amount):
    ev = decode(raw(message(amount=amount)))
    assert isinstance(ev, Purchase)
    assert isinstance(ev.amount, Decimal)
    assert ev.amount == Decimal("11.77")
    assert str(ev.amount) == "11.77"


@settings(max_examples=100, deadline=None)
@given(st.decimals(min_value=0, max_value=10**10, places=2, allow_nan=False))
def test_amount_sent_as_a_json_number_with_cents_is_decoded_exactly(amount):
    # Up to 15 significant digits survive the JSON float; beyond that, send strings.
    body = json.dumps(message(amount=None)).rstrip("}") + f', "amount": {amount}}}'
    ev = decode(body.encode())
    assert isinstance(ev, Purchase), ev
    assert ev.amount == amount


def test_unknown_extra_fields_are_ignored():
    ev = decode(raw(message(loyalty_tier="gold", nested={"a": [1, 2]})))
    assert isinstance(ev, Purchase)
    assert not hasattr(ev, "loyalty_tier")
    assert "loyalty_tier" not in ev.model_dump()
    assert ev == decode(raw(message()))


def test_an_occurred_at_with_an_offset_is_the_same_instant_in_utc():
    ev = decode(raw(message(occurred_at="2024-03-01T12:15:00+02:00")))
    assert isinstance(ev, Purchase)
    assert epoch_ms(ev.occurred_at) == epoch_ms(datetime(2024, 3, 1, 10, 15, tzinfo=UTC))


@pytest.mark.parametrize("level", sorted(SATISFACTION_LEVELS))
def test_survey_accepts_each_of_the_seven_satisfaction_levels(level):
    ev = decode(raw(message("survey", satisfaction=level)))
    assert isinstance(ev, Survey)
    assert ev.satisfaction == level
    assert len(SATISFACTION_LEVELS) == 7


# -- rejected ------------------------------------------------------------------------


def test_a_naive_occurred_at_is_rejected_with_a_reason_about_the_timezone():
    reason = rejected(message(occurred_at="2024-03-01T10:15:00"))
    assert "occurred_at" in reason
    assert "timezone" in reason


def test_a_negative_amount_is_rejected():
    reason = rejected(message(amount="-1.00"))
    assert "amount" in reason


def test_a_negative_refund_amount_is_rejected():
    assert "amount" in rejected(message("refund", amount=-5))


def test_an_unknown_type_is_rejected():
    reason = rejected(message(type="teleport"))
    assert "teleport" in reason


def test_a_message_without_a_type_is_rejected():
    msg = message()
    del msg["type"]
    assert "type" in rejected(msg)


def test_a_missing_customer_id_is_rejected():
    reason = rejected(message(customer_id=None))
    assert "customer_id" in reason
    assert "required" in reason.lower()


def test_a_customer_id_longer_than_128_characters_is_rejected():
    assert isinstance(decode(raw(message(customer_id="c" * 128))), Purchase)
    reason = rejected(message(customer_id="c" * 129))
    assert "customer_id" in reason
    assert "128" in reason


def test_bad_json_is_rejected_as_not_valid_json():
    result = decode(b'{"type": "purchase", ')
    assert isinstance(result, Rejected)
    assert "not valid JSON" in result.reason


def test_an_empty_message_is_rejected():
    result = decode(None)
    assert isinstance(result, Rejected)
    assert "empty" in result.reason


def test_a_json_value_that_is_not_an_object_is_rejected():
    reason = rejected([message()])
    assert "object" in reason
    assert "list" in reason


@pytest.mark.parametrize("discount", [-0.01, 1.01, 2])
def test_a_discount_outside_zero_to_one_is_rejected(discount):
    assert "discount" in rejected(message(discount=discount))


@pytest.mark.parametrize("discount", [0, 0.5, 1])
def test_a_discount_within_zero_to_one_is_accepted(discount):
    ev = decode(raw(message(discount=discount)))
    assert isinstance(ev, Purchase)
    assert ev.discount == discount


@pytest.mark.parametrize("currency", ["eur", "EURO", "EU", "E1R", ""])
def test_a_currency_that_is_not_three_uppercase_letters_is_rejected(currency):
    assert "currency" in rejected(message(currency=currency))


@pytest.mark.parametrize("level", ["happy", "SATISFIED", "very satisfied", "", "5"])
def test_a_survey_satisfaction_outside_the_seven_levels_is_rejected(level):
    assert "satisfaction" in rejected(message("survey", satisfaction=level))


# -- what the sinks can store --------------------------------------------------------


@pytest.mark.parametrize(
    "occurred_at",
    [
        "0001-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T00:00:01Z",
        "2100-01-01T00:00:00Z",
        "2106-02-07T06:28:15Z",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_an_occurred_at_a_clickhouse_datetime_cannot_hold_is_rejected_naming_the_range(occurred_at):
    reason = rejected(message(occurred_at=occurred_at))
    assert "occurred_at" in reason
    assert "1970-01-02T00:00:00Z" in reason and "2100-01-01T00:00:00Z" in reason


@pytest.mark.parametrize(
    "occurred_at",
    [
        "1970-01-02T00:00:00Z",
        "1970-01-02T01:00:00+01:00",
        "2099-12-31T23:59:59.999Z",
        "2100-01-01T00:59:59+01:00",
    ],
)
def test_an_occurred_at_at_the_edges_of_the_range_is_accepted(occurred_at):
    assert isinstance(decode(raw(message(occurred_at=occurred_at))), Purchase)


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    )
)
def test_every_accepted_occurred_at_and_a_year_after_it_fit_a_clickhouse_datetime(t):
    ev = decode(raw(message(occurred_at=t.isoformat())))
    if isinstance(ev, Purchase):
        seconds = epoch_ms(ev.occurred_at) // 1000
        # DateTime is UInt32 seconds; deadlines derived from an event come up to a year later.
        assert 0 < seconds and seconds + 366 * 86_400 < 2**32
    else:
        assert "occurred_at" in ev.reason


@pytest.mark.parametrize("type_", ["purchase", "refund"])
def test_an_amount_above_ten_billion_is_rejected_and_ten_billion_is_accepted(type_):
    assert AMOUNT_MAX == Decimal(10) ** 10
    assert decode(raw(message(type_, amount="10000000000"))).amount == AMOUNT_MAX
    reason = rejected(message(type_, amount="10000000000.0001"))
    assert "amount" in reason and "10000000000" in reason
    assert "amount" in rejected(message(type_, amount="99999999999999.9999"))


def test_an_event_more_than_the_skew_after_its_received_time_is_rejected_naming_both_times():
    received = datetime(2024, 3, 1, 9, 0, tzinfo=UTC)
    day = 86_400_000
    body = raw(message(occurred_at="2024-03-02T09:00:00.001Z"))
    reason = decode(body, epoch_ms(received), day)
    assert isinstance(reason, Rejected)
    assert "2024-03-02T09:00:00.001Z" in reason.reason and "2024-03-01T09:00:00Z" in reason.reason
    assert "TOUCHSTREAM_MAX_FUTURE_SKEW_S" in reason.reason and "clock" in reason.reason
    at_the_bound = raw(message(occurred_at="2024-03-02T09:00:00Z"))
    assert isinstance(decode(at_the_bound, epoch_ms(received), day), Purchase)
    assert isinstance(decode(body, epoch_ms(received), 2 * day), Purchase)
    assert isinstance(decode(body), Purchase)  # no received time: nothing to compare with


def test_a_cloudevent_dated_too_far_ahead_is_rejected_like_the_plain_form():
    received = epoch_ms(datetime(2024, 1, 1, tzinfo=UTC))
    result = decode(raw(cloudevent()), received, 60_000)
    assert isinstance(result, Rejected) and "occurred_at" in result.reason


# -- CloudEvents ---------------------------------------------------------------------


def cloudevent(ce_type: str = "com.touchstream.purchase", **changes: Any) -> dict[str, Any]:
    data = dict(VALID["purchase"])
    ce = {
        "specversion": "1.0",
        "id": COMMON["event_id"],
        "source": COMMON["source"],
        "type": ce_type,
        "subject": COMMON["customer_id"],
        "time": COMMON["occurred_at"],
        "datacontenttype": "application/json",
        "data": data,
        **changes,
    }
    return {k: v for k, v in ce.items() if v is not None}


@pytest.mark.parametrize("ce_type", ["com.touchstream.purchase", "purchase"])
def test_a_cloudevents_structured_event_maps_to_the_same_event_as_the_plain_form(ce_type):
    ev = decode(raw(cloudevent(ce_type)))
    assert isinstance(ev, Purchase)
    assert ev == decode(raw(message()))


@pytest.mark.parametrize("specversion", ["0.3", "2.0", 1.0])
def test_a_cloudevent_with_a_wrong_specversion_is_rejected_with_a_readable_reason(specversion):
    reason = rejected(cloudevent(specversion=specversion))
    assert "CloudEvent" in reason
    assert "specversion" in reason
    assert repr(specversion) in reason


def test_a_cloudevent_without_a_subject_is_rejected_for_its_customer_id():
    assert "customer_id" in rejected(cloudevent(subject=None))


def test_a_cloudevent_whose_data_is_not_an_object_is_rejected():
    assert "data" in rejected(cloudevent(data=[1, 2]))


# -- event time ----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1900, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    )
)
def test_epoch_ms_is_the_exact_floor_of_the_utc_milliseconds(t):
    exact = (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert epoch_ms(t) == exact


def test_epoch_ms_floors_instants_just_before_1970_to_the_previous_millisecond():
    assert epoch_ms(datetime(1969, 12, 31, 23, 59, 59, 999_500, tzinfo=UTC)) == -1


# -- the exported JSON Schema --------------------------------------------------------


def test_the_exported_json_schema_describes_every_event_type_and_says_extras_are_ignored():
    schema = event_json_schema()
    assert schema["$id"]
    assert schema["title"]
    assert "ignored" in schema["description"]
    assert set(schema["discriminator"]["mapping"]) == set(VALID)
    assert set(schema["$defs"]) >= {m.__name__ for m in MODELS.values()}


def test_the_committed_docs_event_schema_json_equals_the_models():
    committed = (ROOT / "docs" / "event.schema.json").read_text(encoding="utf-8")
    assert SCHEMA_PATH == ROOT / "docs" / "event.schema.json"
    assert json.loads(committed) == event_json_schema(), (
        "docs/event.schema.json is out of date: run `python -m touchstream.schema_export`"
    )
    assert committed == render(event_json_schema()), (
        "docs/event.schema.json is not in its generated form: "
        "run `python -m touchstream.schema_export`"
    )
