"""The event contract: one JSON object per Kafka message, key = customer_id.

A tagged union on ``type``. Unknown extra fields are accepted and ignored; naive
timestamps are rejected (event time must be unambiguous for replays to agree).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

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

Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=True)

    event_id: str = Field(min_length=1, max_length=256)
    customer_id: str = Field(min_length=1, max_length=128)
    occurred_at: AwareDatetime
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
