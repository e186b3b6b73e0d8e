"""A customer's current profile from its live state: what the till shows (domain.md:
"how many times this customer came this month and how much they bought"). Pure.

``live_profile(state, as_of_ms, quick_days)`` turns a customer's state, as the worker's
table holds it (``agents.records.Stored.decode``), into the JSON of
``GET /customers/{id}`` (docs/analysts.md, "The till"). The month is the calendar month
(UTC) of ``as_of_ms``, the worker's stream time.

This month's visits are exact: purchase days are all kept. This month's spend comes from
the state's spend of its latest ``RECENT_SPEND_DAYS`` purchase days of the current
relationship: exact when every purchase day of the month is among them
(``spend_this_month_exact``), else the spend of those days only, a lower bound (the
ClickHouse view ``customer_profile`` has the exact figure).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from touchstream.domain.alerts import LEVEL, SEVERITY_LABELS, iso_ms, severity
from touchstream.domain.customer import CustomerState
from touchstream.domain.issues import outcome
from touchstream.domain.units import DAY_MS

ALERT_KINDS = {level: kind for kind, level in LEVEL.items()}


def month_start_day(as_of_ms: int) -> int:
    """The day number of the first day of ``as_of_ms``'s calendar month (UTC)."""
    t = datetime.fromtimestamp(as_of_ms / 1000, UTC)
    return int(datetime(t.year, t.month, 1, tzinfo=UTC).timestamp()) // 86_400


def _money(v: Decimal | float) -> str:
    return format(Decimal(str(v)) if isinstance(v, float) else v, "f")


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_ms(ms)


def month_figures(state: CustomerState, as_of_ms: int) -> tuple[int, float, bool]:
    """(visits, spend, spend exact) of the calendar month of ``as_of_ms``."""
    first, today = month_start_day(as_of_ms), as_of_ms // DAY_MS
    days = [d for d in state.purchase_days if first <= d <= today]
    spent = [(d, s) for d, s in state.recent_spend if first <= d <= today]
    return len(days), round(sum(s for _, s in spent), 4), len(spent) == len(days)


def live_profile(state: CustomerState, as_of_ms: int, quick_days: float) -> dict[str, Any]:
    """The profile of ``GET /customers/{id}``. ``as_of_ms``: stream time (never before
    the customer's own latest event)."""
    as_of_ms = max(as_of_ms, state.last_event_ms)
    visits, spend, exact = month_figures(state, as_of_ms)
    first_day = month_start_day(as_of_ms)
    level = state.alert_level
    open_severity = severity(state.net_spend) if level else None
    return {
        "customer_id": state.customer_id,
        "as_of": iso_ms(as_of_ms),
        "month": datetime.fromtimestamp(first_day * 86_400, UTC).strftime("%Y-%m"),
        "visits_this_month": visits,
        "spend_this_month": _money(spend),
        "spend_this_month_exact": exact,
        "purchases": state.purchases,
        "purchase_days": len(state.purchase_days),
        "purchase_total": _money(state.purchase_total),
        "refund_total": _money(state.refund_total),
        "net_spend": _money(state.net_spend),
        "first_purchase_at": _iso(state.first_purchase_ms),
        "last_purchase_at": _iso(state.last_purchase_ms),
        "frequency": state.frequency,
        "recency": state.recency_span_days,
        "T": state.age_days(as_of_ms),
        "recency_days": state.recency_days(as_of_ms),
        "monetary_value": float(state.monetary_value),
        "stage": state.stage or "",
        "stage_since": _iso(state.stage_since_ms) if state.stage else None,
        "declined_from": state.declined_from or "",
        "relationships": state.relationships,
        "exit_pattern": state.exit_pattern or "",
        "defection_type": state.defection_type or "",
        "defection_confidence": state.defection_confidence,
        "open_alert": ALERT_KINDS.get(level, ""),
        "open_alert_severity": open_severity or 0,
        "open_alert_severity_label": SEVERITY_LABELS[open_severity - 1] if open_severity else "",
        "complaint_outcome": outcome(state.complaints, quick_days),
        "next_deadline": _iso(state.next_deadline_ms),
        "first_event_at": _iso(state.first_event_ms),
        "last_event_at": _iso(state.last_event_ms),
        "events": state.version,
    }
