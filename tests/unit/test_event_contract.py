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
        assert seconds > 0 and seconds + 366 * 86_400 < 2**32
    else:
        assert "occurred_at" in ev.reason


@pytest.mark.parametrize("type_", ["purchase", "refund"])
def test_an_amount_above_ten_billion_is_rejected_and_ten_billion_is_accepted(type_):
    assert Decimal(10) ** 10 == AMOUNT_MAX
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


# -- types are JSON's (docs/events.md): no lax coercion ------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("yes", "a string"),
        ("off", "a string"),
        ("true", "a string"),
        (1, "a number"),
        (0.0, "a number"),
        ([True], "an array"),
    ],
)
def test_resolved_is_only_json_true_or_false(value, kind):
    reason = rejected(message("call", resolved=value))
    assert reason == f"invalid event: call.resolved: Input should be JSON true or false, not {kind}"


@pytest.mark.parametrize("value", [True, False])
def test_resolved_as_json_true_or_false_is_accepted(value):
    ev = decode(raw(message("call", resolved=value)))
    assert isinstance(ev, Call) and ev.resolved is value


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"severity": "3"}, "complaint.severity: Input should be a JSON number, not a string"),
        ({"severity": True}, "complaint.severity: Input should be a JSON number, not a boolean"),
        (
            {"severity": 3.5},
            "complaint.severity: Input should be a valid integer, got a number with a "
            "fractional part",
        ),
    ],
)
def test_severity_as_text_a_boolean_or_a_fraction_is_rejected(changes, reason):
    assert rejected(message("complaint", **changes)) == f"invalid event: {reason}"


@pytest.mark.parametrize("severity", [3, 3.0])
def test_severity_as_a_json_integer_is_accepted_also_written_with_a_zero_fraction(severity):
    ev = decode(raw(message("complaint", severity=severity)))
    assert isinstance(ev, Complaint) and ev.severity == 3 and isinstance(ev.severity, int)


@pytest.mark.parametrize(
    ("type_", "field", "value", "kind"),
    [
        ("call", "duration_s", "120", "a string"),
        ("call", "duration_s", True, "a boolean"),
        ("call", "wait_s", "35", "a string"),
        ("purchase", "discount", "0.1", "a string"),
        ("purchase", "discount", True, "a boolean"),
    ],
)
def test_a_number_field_given_text_or_a_boolean_is_rejected(type_, field, value, kind):
    reason = rejected(message(type_, **{field: value}))
    assert reason == f"invalid event: {type_}.{field}: Input should be a JSON number, not {kind}"


def test_an_infinite_duration_is_rejected_as_not_finite():
    # JSON cannot carry one (orjson refuses 1e400); a Python caller can.
    from schemas.decode import decode_obj

    result = decode_obj(message("call", duration_s=float("inf")))
    assert isinstance(result, Rejected) and "finite" in result.reason


@pytest.mark.parametrize("occurred_at", [1709288100, 1709288100.5])
def test_a_bare_number_as_occurred_at_is_rejected_not_read_as_unix_time(occurred_at):
    reason = rejected(message(occurred_at=occurred_at))
    assert reason == (
        "invalid event: purchase.occurred_at: Input should be an RFC 3339 string such as "
        "2024-05-01T10:15:00Z, not a number"
    )


@pytest.mark.parametrize(
    "occurred_at",
    ["1709288100", "2024-03-01", "2024-03-01T10:15Z", "20240301T101500Z", "March 1st"],
)
def test_an_occurred_at_that_is_not_an_rfc_3339_date_time_is_rejected(occurred_at):
    reason = rejected(message(occurred_at=occurred_at))
    assert "purchase.occurred_at: Input should be an RFC 3339 date and time with seconds" in reason


@pytest.mark.parametrize(
    "occurred_at",
    [
        "2024-03-01T10:15:00Z",
        "2024-03-01t10:15:00z",
        "2024-03-01 10:15:00Z",
        "2024-03-01T10:15:00.123456Z",
        "2024-03-01T11:15:00+01:00",
        "  2024-03-01T10:15:00Z ",
    ],
)
def test_rfc_3339_forms_of_occurred_at_are_accepted_and_blanks_around_them_removed(occurred_at):
    ev = decode(raw(message(occurred_at=occurred_at)))
    assert isinstance(ev, Purchase)
    assert ev.occurred_at.replace(microsecond=0) == datetime(2024, 3, 1, 10, 15, tzinfo=UTC)


@pytest.mark.parametrize(
    ("type_", "changes", "field", "value"),
    [
        ("call", {"direction": " inbound "}, "direction", "inbound"),
        ("call", {"reason": "billing\t"}, "reason", "billing"),
        ("complaint", {"status": " open"}, "status", "open"),
        ("complaint", {"category": "service "}, "category", "service"),
        ("refund", {"reason": " defective "}, "reason", "defective"),
        ("survey", {"satisfaction": " satisfied "}, "satisfaction", "satisfied"),
        ("account", {"change": "moved "}, "change", "moved"),
        ("purchase", {"type": " purchase "}, "type", "purchase"),
        ("purchase", {"currency": " EUR "}, "currency", "EUR"),
    ],
)
def test_enumerations_lose_their_surrounding_blanks_like_every_string(type_, changes, field, value):
    ev = decode(raw(message(type_, **changes)))
    assert isinstance(ev, MODELS[type_]), ev
    assert getattr(ev, field) == value


def test_a_cloudevent_type_with_surrounding_blanks_is_read_without_them():
    assert decode(raw(cloudevent(" com.touchstream.purchase "))) == decode(raw(message()))


@pytest.mark.parametrize(
    ("type_", "changes", "reason"),
    [
        (
            "call",
            {"direction": "Inbound"},
            "call.direction: Input should be 'inbound' or 'outbound'",
        ),
        ("survey", {"satisfaction": "very satisfied"}, "survey.satisfaction: Input should be"),
        (
            "purchase",
            {"type": "Purchase"},
            "Input tag 'Purchase' found using 'type' does not match",
        ),
    ],
)
def test_enumerations_are_case_sensitive_and_keep_inner_blanks(type_, changes, reason):
    assert reason in rejected(message(type_, **changes))


@pytest.mark.parametrize("amount", ["19.99", 19.99, " 19.99 ", 19])
def test_amounts_stay_accepted_as_decimal_strings_or_json_numbers(amount):
    ev = decode(raw(message(amount=amount)))
    assert isinstance(ev, Purchase) and ev.amount == Decimal(str(amount).strip())


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (True, "Decimal input should be an integer, float, string or Decimal object"),
        ("NaN", "Input should be a finite number"),
        ("Infinity", "Input should be a finite number"),
        ("1e11", "Input should be less than or equal to 10000000000"),
        ("1e400", "Decimal input should have no more than 18 digits in total"),
    ],
)
def test_amounts_that_are_booleans_or_not_finite_or_overflowing_are_rejected(amount, reason):
    assert rejected(message(amount=amount)) == f"invalid event: purchase.amount: {reason}"


@pytest.mark.parametrize("field", ["event_id", "customer_id", "order_id", "source"])
def test_a_number_where_a_string_is_due_is_rejected(field):
    assert rejected(message(**{field: 42})) == (
        f"invalid event: purchase.{field}: Input should be a valid string"
    )


def test_text_cells_of_boolean_and_number_fields_become_json_values_and_others_stay_text():
    from schemas.decode import from_text_cells

    cells = {
        "resolved": "true",
        "duration_s": "120",
        "wait_s": " 35.5 ",
        "severity": "3",
        "discount": "0.1",
        "amount": "12.50",
        "order_id": "1001",
        "currency": "EUR",
    }
    assert from_text_cells(cells) == {
        "resolved": True,
        "duration_s": 120,
        "wait_s": 35.5,
        "severity": 3,
        "discount": 0.1,
        "amount": "12.50",  # a decimal string: exact
        "order_id": "1001",  # a string field: text
        "currency": "EUR",
    }
    # Not a JSON boolean or numeral: left as text, so decoding rejects it with its reason.
    odd = {"resolved": "yes", "duration_s": "NaN", "wait_s": "1e999", "severity": "III"}
    assert from_text_cells(odd) == odd


def test_a_csv_file_is_read_with_its_booleans_and_numbers_typed(tmp_path):
    from touchstream.datasets import read_file

    f = tmp_path / "e.csv"
    f.write_text(
        "event_id,customer_id,type,occurred_at,direction,reason,duration_s,resolved\n"
        "1,c,call,2020-01-02T10:00:00Z,inbound,billing,120,true\n"
        "2,c,call,2020-01-02T11:00:00Z,inbound,billing,120,yes\n"
    )
    (_, first), (_, second) = read_file(f)
    assert isinstance(decode(raw(first)), Call)
    assert "call.resolved: Input should be JSON true or false, not a string" in rejected(second)
