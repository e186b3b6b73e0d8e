"""Per-customer running state: RFM and the lifetimes-compatible summary, in event time.

Pure functions only: no I/O, no clock. ``step(state | None, event) -> (state, outputs)``
is the whole update; the shell (agents/) loops it over batches and persists the result.

Purchase days are UTC calendar days. The summary follows
``lifetimes.utils.summary_data_from_transaction_data(freq="D")``:
frequency = repeat purchase days, recency = days from the first to the last purchase
day, T = days from the first purchase day to the as-of day, monetary_value = mean spend
of the repeat purchase days (0 when there are none).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from schemas.events import Event, Purchase, Refund, epoch_ms

DAY_MS = 86_400_000
# How many recent event ids each customer remembers to drop redeliveries. At-least-once
# redelivery replays a short tail, so a small window catches it; older duplicates still
# collapse in ClickHouse (events are keyed by event_id) but would count twice in state.
DEDUP_WINDOW = 64
ZERO = Decimal(0)


def id_hash(event_id: str) -> int:
    """A stable 64-bit fingerprint of an event id (stable across processes, unlike hash())."""
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class CustomerState:
    customer_id: str
    version: int = 0  # distinct events applied: the row version in ClickHouse
    first_event_ms: int = 0
    last_event_ms: int = 0
    purchases: int = 0
    purchase_total: Decimal = ZERO
    refunds: int = 0
    refund_total: Decimal = ZERO
    first_purchase_ms: int | None = None
    last_purchase_ms: int | None = None
    purchase_days: tuple[int, ...] = ()  # distinct UTC day numbers, ascending
    first_day_spend: Decimal = ZERO  # purchases on purchase_days[0]
    recent_ids: tuple[int, ...] = ()

    @property
    def net_spend(self) -> Decimal:
        return self.purchase_total - self.refund_total

    @property
    def frequency(self) -> int:
        return max(len(self.purchase_days) - 1, 0)

    @property
    def recency_span_days(self) -> int:
        """lifetimes' ``recency``: first to last purchase day."""
        return self.purchase_days[-1] - self.purchase_days[0] if self.purchase_days else 0

    @property
    def monetary_value(self) -> Decimal:
        if self.frequency == 0:
            return ZERO
        return (self.purchase_total - self.first_day_spend) / self.frequency

    def age_days(self, as_of_ms: int) -> int:
        """lifetimes' ``T``: first purchase day to the as-of day (0 without purchases)."""
        return as_of_ms // DAY_MS - self.purchase_days[0] if self.purchase_days else 0

    def recency_days(self, as_of_ms: int) -> int | None:
        """Days since the last purchase as of ``as_of_ms`` (stream time)."""
        if self.last_purchase_ms is None:
            return None
        return as_of_ms // DAY_MS - self.last_purchase_ms // DAY_MS


@dataclass(frozen=True, slots=True)
class Accepted:
    """The event changed the customer's state; ``version`` is the state version it made."""

    event: Event
    version: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    event: Event


Output = Accepted | Duplicate


def _add_purchase(s: CustomerState, p: Purchase, t: int) -> CustomerState:
    day = t // DAY_MS
    days = s.purchase_days
    first_day_spend = s.first_day_spend
    if not days or day < days[0]:
        first_day_spend = p.amount  # an earlier day arrived late: it is the new first day
    elif day == days[0]:
        first_day_spend += p.amount
    if day not in days:
        days = tuple(sorted((*days, day)))
    return replace(
        s,
        purchases=s.purchases + 1,
        purchase_total=s.purchase_total + p.amount,
        first_purchase_ms=t if s.first_purchase_ms is None else min(s.first_purchase_ms, t),
        last_purchase_ms=t if s.last_purchase_ms is None else max(s.last_purchase_ms, t),
        purchase_days=days,
        first_day_spend=first_day_spend,
    )


def step(state: CustomerState | None, event: Event) -> tuple[CustomerState, tuple[Output, ...]]:
    """Apply one event to a customer's state. Duplicated event ids change nothing."""
    s = state if state is not None else CustomerState(customer_id=event.customer_id)
    h = id_hash(event.event_id)
    if h in s.recent_ids:
        return s, (Duplicate(event),)
    t = epoch_ms(event.occurred_at)
    s = replace(
        s,
        version=s.version + 1,
        first_event_ms=t if s.version == 0 else min(s.first_event_ms, t),
        last_event_ms=max(s.last_event_ms, t),
        recent_ids=(*s.recent_ids[-(DEDUP_WINDOW - 1) :], h),
    )
    if isinstance(event, Purchase):
        s = _add_purchase(s, event, t)
    elif isinstance(event, Refund):
        s = replace(s, refunds=s.refunds + 1, refund_total=s.refund_total + event.amount)
    return s, (Accepted(event, s.version),)


def step_batch(
    states: Mapping[str, CustomerState], events: Iterable[Event]
) -> tuple[dict[str, CustomerState], list[Output]]:
    """Fold a batch through ``step``. Returns only the customers whose state changed.

    Each customer's events are applied in their order within the batch; customers do
    not affect each other, so the interleaving across customers never matters.
    """
    changed: dict[str, CustomerState] = {}
    outputs: list[Output] = []
    for ev in events:
        cid = ev.customer_id
        before = changed.get(cid) or states.get(cid)
        after, outs = step(before, ev)
        if after is not before:
            changed[cid] = after
        outputs.extend(outs)
    return changed, outputs


# -- persistence form (plain JSON-able values; the shell chooses the bytes) ----------

_FIELDS = CustomerState.__slots__  # type: ignore[attr-defined]
_DECIMALS = {"purchase_total", "refund_total", "first_day_spend"}


def to_record(s: CustomerState) -> list[Any]:
    """A compact positional record (smaller in the changelog than a dict)."""
    return [str(getattr(s, f)) if f in _DECIMALS else getattr(s, f) for f in _FIELDS]


def from_record(rec: Sequence[Any]) -> CustomerState:
    kw = {}
    for f, v in zip(_FIELDS, rec, strict=True):
        if f in _DECIMALS:
            v = Decimal(v)
        elif f in ("purchase_days", "recent_ids"):
            v = tuple(v)
        kw[f] = v
    return CustomerState(**kw)
