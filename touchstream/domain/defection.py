"""Why a relationship weakens: price, product, service or self_change defection
(domain.md, seed 002), or unknown when the evidence does not say. Pure.

Each touchpoint that can explain a defection leaves a signal in the customer's state: a
time and a short code. ``classify`` weighs the signals of the evidence window and names
the type with a confidence and the evidence it used. docs/lifecycle.md lists every code
and weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import SATISFACTION_LEVELS, Event
from touchstream.domain.alerts import _ISO_EXACT, iso_ms

DAY_MS = 86_400_000
TYPES = ("price", "product", "service", "self_change")

EVIDENCE_WINDOW_DAYS = 180
MAX_SIGNALS = 24
LONG_WAIT_S = 300  # a call that waited longer than this counts against the service
DISCOUNT_MIN = 0.15  # a purchase with at least this discount is "bought on discount"
DISCOUNT_ONLY_SHARE = 0.8  # ... and this share of them (3 or more) is discount-only buying
MIN_SCORE = 2.0  # below this, the evidence does not name a type
MIN_MARGIN = 1.5  # the top type must outweigh the second by this factor


def signals_of(event: Event) -> tuple[str, ...]:
    """The signal codes an event leaves (most leave none)."""
    kind = event.type  # the union's tag: cheaper than isinstance on every event
    if kind == "purchase":
        return ("purchase:discount",) if (event.discount or 0) >= DISCOUNT_MIN else ()
    if kind == "complaint":
        codes = [f"complaint:{event.category}:{event.severity}"]
        if event.status != "resolved":
            codes.append(f"complaint_{event.status}")
        return tuple(codes)
    if kind == "call":
        codes = [f"call:{event.reason}"] if event.direction == "inbound" else []
        if event.wait_s >= LONG_WAIT_S:
            codes.append("call_long_wait")
        if not event.resolved:
            codes.append("call_unresolved")
        return tuple(codes)
    if kind == "refund":
        return (f"refund:{event.reason}",)
    if kind == "account":
        return (f"account:{event.change}",)
    if kind == "survey" and SATISFACTION_LEVELS[event.satisfaction] < 0:
        return (f"survey:{event.satisfaction}",)
    return ()


def _weights(code: str) -> dict[str, float]:
    kind, _, rest = code.partition(":")
    if kind == "complaint":
        category, _, severity = rest.partition(":")
        w = 1.0 + int(severity or 3) / 2.5  # severity 1..5 -> 1.4..3.0
        return {} if category == "other" else {category: w}
    if kind in ("complaint_open", "complaint_rejected"):
        return {"service": 1.0}  # unresolved or turned down: the handling failed
    if kind == "call":
        return {
            "price": {"price": 1.0}, "product": {"product": 1.0},
            "service": {"service": 1.0}, "billing": {"service": 0.7},
        }.get(rest, {})
    if kind == "call_long_wait":
        return {"service": 1.0}
    if kind == "call_unresolved":
        return {"service": 0.8}
    if kind == "refund":
        return {
            "defective": {"product": 2.0}, "not_as_described": {"product": 2.0},
            "price": {"price": 2.0}, "changed_mind": {"self_change": 0.5},
        }.get(rest, {})
    if kind == "account":
        return {
            "moved": {"self_change": 4.0}, "closed": {"self_change": 2.0},
            "life_event": {"self_change": 4.0},
        }.get(rest, {})
    if kind == "survey":
        return {}  # dissatisfaction says that, not why: kept as evidence only
    return {}


@dataclass(frozen=True, slots=True)
class Defection:
    type: str  # price | product | service | self_change | unknown
    confidence: float  # 0..1
    evidence: tuple[str, ...]  # the signals used, oldest first, e.g. "1998-02-01 refund:defective"
    scores: tuple[tuple[str, float], ...]


def record(
    signals: tuple[tuple[int, str], ...], at_ms: int, codes: tuple[str, ...]
) -> tuple[tuple[int, str], ...]:
    """Add an event's codes to the signal log; keep the latest MAX_SIGNALS."""
    if not codes:
        return signals
    merged = sorted((*signals, *((at_ms, c) for c in codes)))
    return tuple(merged[-MAX_SIGNALS:])


def _day(ms: int) -> str:
    """The UTC date of ``ms``, ``YYYY-MM-DD`` (as strftime gives it)."""
    if -_ISO_EXACT < ms < _ISO_EXACT:
        return iso_ms(ms)[:10]
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d")


def classify(
    signals: tuple[tuple[int, str], ...], now_ms: int, purchase_days: Sequence[int] = (),
    last_purchase_ms: int | None = None,
) -> Defection:
    """Weigh the signals from EVIDENCE_WINDOW_DAYS before the last purchase (or before
    ``now_ms`` without one) up to ``now_ms``: the touchpoints around the time the
    relationship stopped, however long the silence since. ``purchase_days`` (UTC day
    numbers) give the share of discount buying."""
    anchor = now_ms if last_purchase_ms is None else min(now_ms, last_purchase_ms)
    start = anchor - EVIDENCE_WINDOW_DAYS * DAY_MS
    window = [(t, c) for t, c in signals if start <= t <= now_ms] if signals else None
    if not window:
        return _NO_EVIDENCE  # what the rest gives for no signals, computed once
    scores = dict.fromkeys(TYPES, 0.0)
    used: list[str] = []
    discounted = len({t // DAY_MS for t, c in window if c == "purchase:discount"})
    days = 0
    if discounted >= 3:
        days = sum(1 for d in purchase_days if start // DAY_MS <= d <= now_ms // DAY_MS)
    if discounted >= 3 and discounted / max(days, 1) >= DISCOUNT_ONLY_SHARE:
        scores["price"] += 2.5
        used.append(f"bought on discount on {discounted} of {days} purchase days")
    for t, c in window:
        if c.startswith("purchase"):
            continue
        w = _weights(c)
        for k, v in w.items():
            scores[k] += v
        if w or c.startswith("survey"):
            used.append(f"{_day(t)} {c}")
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    (top, s1), (_, s2) = ranked[0], ranked[1]
    total = sum(scores.values())
    if s1 < MIN_SCORE or s1 < MIN_MARGIN * s2:
        kind, confidence = "unknown", round(1 - s1 / (total + 1), 2) if total else 1.0
    else:
        kind, confidence = top, round(s1 / (total + 1), 2)
    return Defection(kind, confidence, tuple(used), tuple((k, round(v, 2)) for k, v in ranked))


_NO_EVIDENCE = Defection("unknown", 1.0, (), tuple((k, 0.0) for k in sorted(TYPES)))

# Signals that say a problem is still open (or the customer's life changed): churn_risk
# needs one of them, so a loyal customer's handled complaints do not raise alarms.
OPEN_ISSUES = ("complaint_open", "complaint_rejected", "call_unresolved", "account:moved",
               "account:life_event", "account:closed", "survey:")


def risk_score(
    signals: tuple[tuple[int, str], ...], now_ms: int, since_ms: int = 0, days: int = 60
) -> float:
    """Weight of the negative evidence of the last ``days`` (and after ``since_ms``, the
    last churn_risk alert, so the same evidence never alerts twice); 0 unless something
    is still open. Drives early churn_risk alerts."""
    start = max(now_ms - days * DAY_MS, since_ms + 1)
    window = [c for t, c in signals if start <= t <= now_ms]
    if not any(c.startswith(OPEN_ISSUES) for c in window):
        return 0.0
    return sum(sum(_weights(c).values()) for c in window) + sum(
        0.5 for c in window if c.startswith("survey:very")
    )
