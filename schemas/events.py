"""The event contract: one JSON object per Kafka message, key = customer_id.

A tagged union on ``type``. Unknown extra fields are accepted and ignored; naive
timestamps are rejected (event time must be unambiguous for replays to agree).

Values are taken as JSON types them (docs/events.md, "Types are JSON's"): a boolean is
``true``/``false``, a number is a JSON number, a time is an RFC 3339 string. Pydantic's
lax mode would also read ``"yes"`` as true, ``"3"`` as 3 and a bare number as a Unix time;
those are rejected. Amounts are the one documented exception (a decimal string is exact).
Strings, enumerations included, lose their leading and trailing whitespace.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
)
from pydantic_core import PydanticCustomError

SATISFACTION_LEVELS: dict[str, int] = {
    # The seven-level scale of the CSM index (domain.md), with its item scores.
    "very_satisfied": 90,
    "satisfied": 60,
    "fairly_satisfied": 30,
    "neutral": 0,
    "fairly_dissatisfied": -30,
    "dissatisfied": -60,
    "very_dissatisfied": -90,
}

# What the sinks can store (sinks/tables.py): DateTime('UTC') is UInt32 seconds, 1970 to
# 2106-02-07. Events end before 2100, so the silence deadlines the lifecycle derives from
# them (up to a year later) fit too; the first day of 1970 is left out as a margin.
OCCURRED_MIN = datetime(1970, 1, 2, tzinfo=UTC)
OCCURRED_END = datetime(2100, 1, 1, tzinfo=UTC)  # exclusive
# One amount: at most ten billion. Customer totals live in Decimal(18, 4) columns (under
# 10^14); with this cap a customer needs 10,000 maximal purchases to reach that, and the
# worker dead-letters the event that would (agents/processor.py).
AMOUNT_MAX = Decimal(10) ** 10
# How far ahead of the time its batch was received an event may be dated (default of
# TOUCHSTREAM_MAX_FUTURE_SKEW_S): producers' clocks drift, but not by days.
MAX_FUTURE_SKEW_MS = 86_400_000


def _storable(t: datetime) -> datetime:
    if not OCCURRED_MIN <= t < OCCURRED_END:
        raise PydanticCustomError(
            "occurred_at_range",
            "must be from 1970-01-02T00:00:00Z to before 2100-01-01T00:00:00Z (what the "
            "ClickHouse tables store)",
        )
    return t


# RFC 3339's date-time (its T may be t or a space); the offset is optional here so that a
# naive time gets AwareDatetime's own reason ("should have timezone info").
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)?")


_KINDS = {
    bool: "a boolean",
    str: "a string",
    int: "a number",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


def _kind(v: object) -> str:
    """What a JSON value is, for a reason."""
    return _KINDS.get(v.__class__, v.__class__.__name__)


def _rfc3339(v: Any) -> Any:
    """A time is an RFC 3339 string: lax parsing would take 1700000000 (or "1700000000")
    as seconds since 1970, and a date alone as midnight. (Python callers may pass a
    datetime.)"""
    if isinstance(v, datetime):
        return v
    if not isinstance(v, str):
        raise PydanticCustomError(
            "rfc3339_type",
            "Input should be an RFC 3339 string such as 2024-05-01T10:15:00Z, not {kind}",
            {"kind": _kind(v)},
        )
    v = v.strip()
    if not _RFC3339.fullmatch(v):
        raise PydanticCustomError(
            "rfc3339_format",
            "Input should be an RFC 3339 date and time with seconds and an offset, such as "
            "2024-05-01T10:15:00Z or 2024-05-01T12:15:00+02:00",
        )
    return v


def _json_number(v: Any) -> Any:
    """A JSON number: lax mode reads "3" and true as numbers."""
    if isinstance(v, bool | str):
        raise PydanticCustomError(
            "json_number", "Input should be a JSON number, not {kind}", {"kind": _kind(v)}
        )
    return v


def _json_boolean(v: Any) -> Any:
    """JSON true or false: lax mode reads "yes", "off", 1 and 0.0 as booleans."""
    if not isinstance(v, bool):
        raise PydanticCustomError(
            "json_boolean", "Input should be JSON true or false, not {kind}", {"kind": _kind(v)}
        )
    return v


def _stripped(v: Any) -> Any:
    # Enumerations are strings too: stripped like the others (str_strip_whitespace does
    # not reach Literal fields). Case is kept: "Inbound" is not an enumeration value.
    return v.strip() if isinstance(v, str) else v


Number = Annotated[float, Field(allow_inf_nan=False), BeforeValidator(_json_number)]
Integer = Annotated[int, BeforeValidator(_json_number)]  # 3.0 is an integer, as in JSON Schema
Boolean = Annotated[bool, BeforeValidator(_json_boolean)]
Stripped = BeforeValidator(_stripped)

OccurredAt = Annotated[
    AwareDatetime,
    BeforeValidator(_rfc3339),
    AfterValidator(_storable),
    Field(
        description="RFC 3339 with an offset or Z, from 1970-01-02T00:00:00Z to before "
        "2100-01-01T00:00:00Z, and at most TOUCHSTREAM_MAX_FUTURE_SKEW_S (default one "
        "day) after the worker received it",
        # ajv-formats' keywords: validators that know them check the range too.
        json_schema_extra={
            "formatMinimum": "1970-01-02T00:00:00Z",
            "formatExclusiveMaximum": "2100-01-01T00:00:00Z",
        },
    ),
]
Money = Annotated[
    Decimal,
    Field(
        ge=0,
        le=AMOUNT_MAX,
        max_digits=18,
        decimal_places=4,
        description="a decimal from 0 to 10000000000 (ten billion) with at most 4 decimal "
        "places, as a string (exact) or a JSON number",
    ),
]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    event_id: str = Field(min_length=1, max_length=256)
    customer_id: str = Field(min_length=1, max_length=128)
    occurred_at: OccurredAt
    source: str | None = Field(default=None, max_length=256)


class Purchase(_Event):
    type: Literal["purchase"]
    amount: Money
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    order_id: str | None = None
    # The bounds inside, before the JSON-number check (pydantic's JSON Schema for them).
    discount: (
        Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), BeforeValidator(_json_number)]
        | None
    ) = None
    category: str | None = None
    channel: str | None = None


class Call(_Event):
    type: Literal["call"]
    direction: Annotated[Literal["inbound", "outbound"], Stripped]
    reason: Annotated[Literal["price", "product", "service", "billing", "other"], Stripped]
    duration_s: Number = Field(ge=0)
    wait_s: Number = Field(default=0, ge=0)
    resolved: Boolean


class Complaint(_Event):
    type: Literal["complaint"]
    complaint_id: str = Field(min_length=1)
    category: Annotated[Literal["price", "product", "service", "other"], Stripped]
    severity: Integer = Field(ge=1, le=5)
    status: Annotated[Literal["open", "resolved", "rejected"], Stripped]


class Refund(_Event):
    type: Literal["refund"]
    amount: Money
    order_id: str | None = None
    reason: Annotated[
        Literal["defective", "not_as_described", "price", "changed_mind", "other"], Stripped
    ]


class Survey(_Event):
    type: Literal["survey"]
    satisfaction: Annotated[
        Literal[
            "very_satisfied",
            "satisfied",
            "fairly_satisfied",
            "neutral",
            "fairly_dissatisfied",
            "dissatisfied",
            "very_dissatisfied",
        ],
        Stripped,
    ]


class Account(_Event):
    type: Literal["account"]
    change: Annotated[
        Literal["moved", "closed", "reopened", "contact_changed", "life_event"], Stripped
    ]


Event = Annotated[
    Purchase | Call | Complaint | Refund | Survey | Account, Field(discriminator="type")
]
EVENT_TYPES: tuple[type[_Event], ...] = (Purchase, Call, Complaint, Refund, Survey, Account)
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


def _json_kinds() -> dict[str, str]:
    """Field -> "boolean" or "number", for the fields JSON types so (text sources such as
    CSV give them as text: schemas.decode.from_text_cells)."""
    kinds = {}
    for model in EVENT_TYPES:
        for name, f in model.model_fields.items():
            args = get_args(f.annotation) if get_origin(f.annotation) in (Union, UnionType) else ()
            types = {get_args(a)[0] if get_origin(a) is Annotated else a for a in args}
            types = (types or {f.annotation}) - {NoneType}
            if types == {bool}:
                kinds[name] = "boolean"
            elif types and types <= {int, float}:
                kinds[name] = "number"
    return kinds


JSON_KINDS: dict[str, str] = _json_kinds()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(t: datetime) -> int:
    """Event time as integer UTC milliseconds: what the domain and the sinks use.

    Exact integer arithmetic, floored: float ``timestamp() * 1000`` is off by one for
    some times and truncates towards zero before 1970.
    """
    return (t - _EPOCH) // _MS


def ahead_of_received(t_ms: int, received_ms: int, max_skew_ms: int) -> str | None:
    """Why an event dated ``t_ms`` cannot be taken from a batch received at
    ``received_ms``, or None. Time is passed in: the contract never reads a clock."""
    if t_ms - received_ms <= max_skew_ms:
        return None
    return (
        f"occurred_at {_iso(t_ms)} is more than {max_skew_ms / 1000:g} s after the time "
        f"the worker received it ({_iso(received_ms)}, TOUCHSTREAM_MAX_FUTURE_SKEW_S): "
        "check the sending system's clock and time zone"
    )


def _iso(ms: int) -> str:
    t = _EPOCH + timedelta(milliseconds=ms)
    return t.isoformat(timespec="milliseconds" if ms % 1000 else "seconds")[:-6] + "Z"
