"""The event contract: one JSON object per Kafka message, key = customer_id.

A tagged union on ``type``. Unknown extra fields are accepted and ignored; naive
timestamps are rejected (event time must be unambiguous for replays to agree).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter
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
# worker dead-letters the event that would (agents/pipeline.py).
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


OccurredAt = Annotated[
    AwareDatetime,
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
    discount: float | None = Field(default=None, ge=0, le=1)
    category: str | None = None
    channel: str | None = None


class Call(_Event):
    type: Literal["call"]
    direction: Literal["inbound", "outbound"]
    reason: Literal["price", "product", "service", "billing", "other"]
    duration_s: float = Field(ge=0)
    wait_s: float = Field(default=0, ge=0)
    resolved: bool


class Complaint(_Event):
    type: Literal["complaint"]
    complaint_id: str = Field(min_length=1)
    category: Literal["price", "product", "service", "other"]
    severity: int = Field(ge=1, le=5)
    status: Literal["open", "resolved", "rejected"]


class Refund(_Event):
    type: Literal["refund"]
    amount: Money
    order_id: str | None = None
    reason: Literal["defective", "not_as_described", "price", "changed_mind", "other"]


class Survey(_Event):
    type: Literal["survey"]
    satisfaction: Literal[
        "very_satisfied",
        "satisfied",
        "fairly_satisfied",
        "neutral",
        "fairly_dissatisfied",
        "dissatisfied",
        "very_dissatisfied",
    ]


class Account(_Event):
    type: Literal["account"]
    change: Literal["moved", "closed", "reopened", "contact_changed", "life_event"]


Event = Annotated[
    Purchase | Call | Complaint | Refund | Survey | Account, Field(discriminator="type")
]
EVENT_TYPES: tuple[type[_Event], ...] = (Purchase, Call, Complaint, Refund, Survey, Account)
EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


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
