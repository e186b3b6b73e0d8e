"""Rows for the tables of sinks/tables.py, from domain outputs (pure: the processor half
of a processor/writer split; the sinks are the writers)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import orjson

from schemas.events import Event, Purchase, Refund
from sinks.base import Row
from touchstream.domain.rfm import CustomerState

_COMMON = {"event_id", "customer_id", "type", "occurred_at", "source", "amount", "currency"}


def ms_to_dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def event_row(ev: Event, version: int, partition: int, offset: int) -> Row:
    amount = ev.amount if isinstance(ev, Purchase | Refund) else Decimal(0)
    currency = ev.currency if isinstance(ev, Purchase) else ""
    attributes = {
        k: v for k, v in ev.model_dump(mode="json", exclude_none=True).items() if k not in _COMMON
    }
    return (
        ev.event_id,
        ev.customer_id,
        ev.type,
        ev.occurred_at.astimezone(UTC),
        ev.source or "",
        amount,
        currency,
        orjson.dumps(attributes).decode(),
        partition,
        offset,
        version,
    )


def state_row(s: CustomerState) -> Row:
    return (
        s.customer_id,
        s.version,
        ms_to_dt(s.first_event_ms),
        ms_to_dt(s.last_event_ms),
        s.purchases,
        s.purchase_total,
        s.refunds,
        s.refund_total,
        s.net_spend,
        None if s.first_purchase_ms is None else ms_to_dt(s.first_purchase_ms),
        None if s.last_purchase_ms is None else ms_to_dt(s.last_purchase_ms),
        s.frequency,
        s.recency_span_days,
        float(s.monetary_value),
    )


def dead_letter_row(
    topic: str, partition: int, offset: int, key: bytes | None, raw: bytes | None, reason: str,
    received_at: datetime,
) -> Row:
    return (
        topic,
        partition,
        offset,
        (key or b"").decode("utf-8", "replace"),
        (raw or b"").decode("utf-8", "replace"),
        reason,
        received_at,
        1,
    )


def clock_row(partition: int, stream_time_ms: int) -> Row:
    return (partition, ms_to_dt(stream_time_ms), stream_time_ms)
