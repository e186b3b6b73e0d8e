"""Churn alerts: what is sent to the people and programs that act on a weakening
relationship. Pure. The JSON form is versioned (docs/alerts.md, docs/alert.schema.json).

One episode per weakening relationship: it opens with the first alert (churn_risk or
decline), may escalate (churn_risk < decline < churned, each kind at most once and never
backwards), and closes with ``recovered`` when the customer comes back. No storm: a
kind already sent in the episode, or a lower one, is never sent again.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

ALERT_SCHEMA_VERSION = 1
KINDS = ("churn_risk", "decline", "churned", "recovered")
LEVEL = {"churn_risk": 1, "decline": 2, "churned": 3}

# Severity grows with the customer's value: net spend tiers (in the purchase currency).
VALUE_TIERS: tuple[Decimal, ...] = (Decimal(100), Decimal(500), Decimal(2000))
SEVERITY_LABELS = ("low", "medium", "high", "critical")
CHURN_RISK_MIN_SCORE = 4.0  # weight of live, unresolved trouble that raises churn_risk
RISK_RECOVERY_DAYS = 14  # a purchase this long after a churn_risk alert closes the episode


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str  # customer_id/episode/kind: the same alert on a replay has the same id
    customer_id: str
    at_ms: int
    kind: str
    episode: int
    stage: str
    previous_stage: str | None
    defection_type: str
    confidence: float
    severity: int  # 1..4
    net_spend: Decimal
    last_purchase_ms: int | None
    evidence: tuple[str, ...]
    message: str
    version: int  # the customer state version that raised it
    open_issues: tuple[str, ...] = ()  # churn_risk: the live, unresolved trouble that raised it
    # With a churn model loaded (touchstream.domain.btyd): P(no purchase in 90 days) and
    # the predicted 365-day value at stake, as of the alert.
    churn_probability_90d: float | None = None
    value_at_risk: float | None = None

    @property
    def severity_label(self) -> str:
        return SEVERITY_LABELS[self.severity - 1]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC text ending in Z, exactly
    ``datetime.fromtimestamp(ms / 1000, UTC).isoformat()`` with ``+00:00`` as ``Z``
    (``2025-01-01T00:00:00Z``, ``2025-01-01T00:00:00.123000Z``), from cached pieces."""
    if not -_ISO_EXACT < ms < _ISO_EXACT:
        return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    day = ms // 86_400_000
    date = _DATES.get(day)
    if date is None:
        if len(_DATES) >= 1 << 16:
            _DATES.clear()
        t = time.gmtime(day * 86_400)
        date = _DATES[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
    s = ms // 1000 - day * 86_400  # second of the day
    return date + _HH_MM[s // 60] + _SS[s % 60] + _FRACTION[ms % 1000]


# Within 2**32 s of 1970 (1833..2106) ms / 1000 as a float is close enough for
# fromtimestamp to round to the exact millisecond, so the integer arithmetic matches it;
# outside, the datetime way keeps its (float) rounding.
_ISO_EXACT = 1000 << 32
_DATES: dict[int, str] = {}  # day number -> "YYYY-MM-DDT"
_HH_MM = [f"{h:02d}:{m:02d}:" for h in range(24) for m in range(60)]
_SS = [f"{s:02d}" for s in range(60)]
_FRACTION = ["Z", *(f".{f:03d}000Z" for f in range(1, 1000))]
_iso = iso_ms


def severity(net_spend: Decimal) -> int:
    """1 + the value tiers reached (``VALUE_TIERS`` ascending)."""
    return 1 + bisect_right(VALUE_TIERS, net_spend)


def sentence(
    kind: str,
    customer_id: str,
    stage: str,
    net_spend: Decimal,
    silent_days: int | None,
    defection_type: str,
    confidence: float,
    evidence: tuple[str, ...],
    open_issues: tuple[str, ...] = (),
) -> str:
    who = f"Customer {customer_id} (net spend {net_spend:.2f})"
    why = (
        f"likely {defection_type.replace('_', '-')} defection (confidence {confidence:.2f})"
        if defection_type != "unknown"
        else "no clear reason in the recent touchpoints"
    )
    ev = f" Evidence: {'; '.join(evidence[-4:])}." if evidence else ""
    silent = f" after {silent_days} days without a purchase" if silent_days is not None else ""
    if kind == "churn_risk":
        return f"{who} is at risk while still {stage}: {'; '.join(open_issues)}; {why}."
    if kind == "decline":
        return f"{who} is declining{silent}: {why}.{ev}"
    if kind == "churned":
        return f"{who} has churned{silent}: {why}.{ev}"
    return f"{who} is back ({stage}){silent}."


def with_churn(alert: Alert, churn_probability_90d: float, value_at_risk: float | None) -> Alert:
    """The alert with the churn model's view of the customer (touchstream.domain.btyd), in
    its fields and at the end of its sentence."""
    value = "" if value_at_risk is None else f"; predicted 365-day value {value_at_risk:.2f}"
    out = _new(Alert)  # dataclasses.replace, without its per-field machinery
    for f in _ALERT_FIELDS:
        _set(out, f, getattr(alert, f))
    _set(out, "churn_probability_90d", churn_probability_90d)
    _set(out, "value_at_risk", value_at_risk)
    _set(
        out,
        "message",
        f"{alert.message} Churn probability (no purchase in 90 days) "
        f"{churn_probability_90d:.2f}{value}.",
    )
    return out


_set = object.__setattr__
_new = object.__new__
_ALERT_FIELDS: tuple[str, ...] = Alert.__slots__
