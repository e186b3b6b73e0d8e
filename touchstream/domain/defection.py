"""Why a relationship weakens: price, product, service or self_change defection
(domain.md, seed 002), or unknown when the evidence does not say; and whether trouble is
still live enough to warn (churn risk). Pure.

Each touchpoint that can explain a defection leaves a signal in the customer's state (a
time and a short code); complaints are followed by id to their outcome
(``touchstream.domain.issues``) and discounted purchase days are kept apart. ``classify``
weighs the evidence of the window and names the type with a confidence and the evidence
it used; ``risk`` sums the trouble that is still live at a moment. docs/lifecycle.md
lists every code and weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.events import SATISFACTION_LEVELS, Event
from touchstream.domain import issues
from touchstream.domain.alerts import _ISO_EXACT, iso_ms
from touchstream.domain.issues import Complaint
from touchstream.domain.units import DAY_MS

TYPES = ("price", "product", "service", "self_change")

EVIDENCE_WINDOW_DAYS = 180
RECENT_EVIDENCE_DAYS = 90  # evidence older than this before the last purchase counts half
MAX_SIGNALS = 24
LONG_WAIT_S = 300  # a call that waited longer than this counts against the service
DISCOUNT_MIN = 0.15  # a purchase with at least this discount is "bought on discount"
MAX_DISCOUNT_DAYS = 32  # discounted purchase days kept
MIN_SCORE = 1.5  # below this, the evidence does not name a type
MIN_MARGIN = 1.5  # the top type must outweigh the second by this factor
QUICKLY_RESOLVED_FACTOR = 0.5  # a complaint resolved quickly is half the evidence
RISK_WINDOW_DAYS = 60  # trouble older than this no longer raises churn risk
# A negative survey says *that* the customer is unhappy, not why: it strengthens the
# leading explanation (and live trouble), never names one by itself.
SURVEY_WEIGHT = {"fairly_dissatisfied": 0.25, "dissatisfied": 0.5, "very_dissatisfied": 1.0}


def signals_of(event: Event) -> tuple[str, ...]:
    """The signal codes an event leaves (most leave none). Complaints and discounts are
    kept by ``issues.report`` and ``discount_days`` instead."""
    kind = event.type  # the union's tag: cheaper than isinstance on every event
    if kind == "purchase" or kind == "complaint":
        return ()
    if event.type == "call":  # (compared on the event itself, so the type checker narrows it)
        codes = []
        if not event.resolved:
            codes.append(f"call_unresolved:{event.reason}")
        elif event.direction == "inbound":
            codes.append(f"call:{event.reason}")
        if event.wait_s >= LONG_WAIT_S:
            codes.append("call_long_wait")
        return tuple(codes)
    if event.type == "refund":
        return (f"refund:{event.reason}",)
    if event.type == "account":
        return (f"account:{event.change}",)
    if event.type == "survey" and SATISFACTION_LEVELS[event.satisfaction] < 0:
        return (f"survey:{event.satisfaction}",)
    return ()


_CALL_REASON = {"price": {"price": 1.0}, "product": {"product": 1.0}, "service": {"service": 1.0}}


def _weights(code: str) -> dict[str, float]:
    """What one signal says about why (complaints: ``complaint_weights``)."""
    kind, _, rest = code.partition(":")
    if kind == "call":
        # A question answered: what it was about; a routine billing call is barely service.
        return _CALL_REASON.get(rest) or ({"service": 0.3} if rest == "billing" else {})
    if kind == "call_unresolved":
        # Not solved on the call: the service failed, about what it was about.
        w = dict(_CALL_REASON.get(rest, {}))
        w["service"] = w.get("service", 0.0) + (0.8 if rest != "billing" else 1.1)
        return w
    if kind == "call_long_wait":
        return {"service": 1.0}
    if kind == "refund":
        return {
            "defective": {"product": 2.0},
            "not_as_described": {"product": 2.0},
            "price": {"price": 2.0},
            "changed_mind": {"self_change": 0.5},
        }.get(rest, {})
    if kind == "account":
        return {
            "moved": {"self_change": 4.0},
            "closed": {"self_change": 2.0},
            "life_event": {"self_change": 4.0},
        }.get(rest, {})
    # Signals of stored states from before complaints were followed by id.
    if kind == "complaint":
        category, _, severity = rest.partition(":")
        return {} if category == "other" else {category: 1.0 + int(severity or 3) / 2.5}
    if kind in ("complaint_open", "complaint_rejected"):
        return {"service": 1.0}
    return {}


def complaint_weight(c: Complaint) -> float:
    """What a complaint's subject weighs: 1 + severity / 2.5 (1.4 .. 3.0); 'other': 0."""
    return 0.0 if c.category == "other" else 1.0 + c.severity / 2.5


def complaint_weights(
    c: Complaint, at_ms: int, quick_days: float
) -> tuple[dict[str, float], str] | None:
    """What a complaint says about why, as of ``at_ms``, and how to show it."""
    status = c.status_at(at_ms)
    if status is None:
        return None
    base = complaint_weight(c)
    w: dict[str, float] = {c.category: base} if base else {}
    closed = next((t for t, s in c.reports if s != issues.OPEN and t <= at_ms), None)
    if status == issues.OPEN:
        w["service"] = w.get("service", 0.0) + 1.0  # not handled (yet)
        days = (at_ms - c.opened_ms) // DAY_MS
        label = f"complaint:{c.category}:{c.severity} open for {days} days"
    elif status == issues.REJECTED:
        w["service"] = w.get("service", 0.0) + 1.0  # turned down: the handling failed
        label = f"complaint:{c.category}:{c.severity} rejected"
    else:
        took = ((closed or c.opened_ms) - c.opened_ms) / DAY_MS
        if took <= quick_days and not c.reopened:
            w = {k: v * QUICKLY_RESOLVED_FACTOR for k, v in w.items()}
            label = f"complaint:{c.category}:{c.severity} resolved in {_duration(took)}"
        else:  # handled, but slowly: it counts a little against the service
            w["service"] = w.get("service", 0.0) + 0.5
            label = f"complaint:{c.category}:{c.severity} resolved after {_duration(took)}"
    return w, label


def _duration(days: float) -> str:
    return f"{days * 24:.0f} h" if days < 2 else f"{days:.0f} days"


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


def add_discount_day(days: tuple[int, ...], day: int) -> tuple[int, ...]:
    """The discounted purchase days (UTC day numbers, ascending) with ``day``."""
    if day in days:
        return days
    return tuple(sorted((*days, day))[-MAX_DISCOUNT_DAYS:])


def _day(ms: int) -> str:
    """The UTC date of ``ms``, ``YYYY-MM-DD`` (as strftime gives it)."""
    if -_ISO_EXACT < ms < _ISO_EXACT:
        return iso_ms(ms)[:10]
    import datetime as _dt

    return _dt.datetime.fromtimestamp(ms / 1000, tz=_dt.UTC).strftime("%Y-%m-%d")


def discount_change(
    purchase_days: Sequence[int], discount_days: Sequence[int], last_day: int
) -> tuple[float, str | None]:
    """Price evidence from buying: a switch from full price to discount buying before
    the last purchase (the latest 2 or more purchase days in a row on discount, at most a
    third of the up to 10 before them) weighs 2.5; always buying on discount weighs
    nothing."""
    if not discount_days:
        return 0.0, None
    days = [d for d in purchase_days if d <= last_day][-MAX_DISCOUNT_DAYS:]
    disc = set(discount_days)
    run = 0
    while run < len(days) and days[-1 - run] in disc:
        run += 1
    earlier = days[: len(days) - run][-10:]
    if run < 2 or len(earlier) < 2:
        return 0.0, None
    e = sum(d in disc for d in earlier)
    if e * 3 <= len(earlier):
        return 2.5, (
            f"switched to discount buying: the latest {run} purchase days on "
            f"discount, {e} of the {len(earlier)} before"
        )
    return 0.0, None


def classify(
    signals: tuple[tuple[int, str], ...],
    now_ms: int,
    purchase_days: Sequence[int] = (),
    last_purchase_ms: int | None = None,
    complaints: tuple[Complaint, ...] = (),
    discount_days: Sequence[int] = (),
    quick_days: float = 3.0,
) -> Defection:
    """Weigh the evidence from EVIDENCE_WINDOW_DAYS before the last purchase (or before
    ``now_ms`` without one) up to ``now_ms``: the touchpoints around the time the
    relationship stopped, however long the silence since. Evidence more than
    RECENT_EVIDENCE_DAYS before that counts half."""
    anchor = now_ms if last_purchase_ms is None else min(now_ms, last_purchase_ms)
    start = anchor - EVIDENCE_WINDOW_DAYS * DAY_MS
    recent = anchor - RECENT_EVIDENCE_DAYS * DAY_MS
    window = [(t, c) for t, c in signals if start <= t <= now_ms] if signals else []
    found = [c for c in complaints if start <= c.opened_ms <= now_ms] if complaints else []
    change, change_text = discount_change(purchase_days, discount_days, anchor // DAY_MS)
    if not window and not found and not change:
        return _NO_EVIDENCE  # what the rest gives for no signals, computed once
    scores = dict.fromkeys(TYPES, 0.0)
    items: list[tuple[int, str]] = []
    if change:
        scores["price"] += change
        items.append((anchor, f"{_day(anchor)} {change_text}"))
    survey = 0.0
    for t, c in window:
        if c.startswith("survey:"):
            survey += SURVEY_WEIGHT.get(c[7:], 0.0) * (1.0 if t >= recent else 0.5)
            items.append((t, f"{_day(t)} {c}"))
            continue
        w = _weights(c)
        if w:
            _add(scores, w, 1.0 if t >= recent else 0.5)
            items.append((t, f"{_day(t)} {c}"))
    for comp in found:
        r = complaint_weights(comp, now_ms, quick_days)
        if r is not None and r[0]:
            _add(scores, r[0], 1.0 if comp.opened_ms >= recent else 0.5)
            items.append((comp.opened_ms, f"{_day(comp.opened_ms)} {r[1]}"))
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    if survey and ranked[0][1] > 0:  # dissatisfaction backs the leading explanation
        scores[ranked[0][0]] += survey
        ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    (top, s1), (_, s2) = ranked[0], ranked[1]
    total = sum(scores.values())
    if s1 < MIN_SCORE or s1 < MIN_MARGIN * s2:
        kind, confidence = "unknown", round(1 - s1 / (total + 1), 2) if total else 1.0
    else:
        kind, confidence = top, round(s1 / (total + 1), 2)
    used = tuple(text for _, text in sorted(items))
    return Defection(kind, confidence, used, tuple((k, round(v, 2)) for k, v in ranked))


def _add(scores: dict[str, float], w: dict[str, float], factor: float) -> None:
    for k, v in w.items():
        scores[k] += v * factor


_NO_EVIDENCE = Defection("unknown", 1.0, (), tuple((k, 0.0) for k in sorted(TYPES)))


# -- churn risk: live, unresolved trouble ------------------------------------------------


@dataclass(frozen=True, slots=True)
class Risk:
    score: float
    live: tuple[str, ...]  # the open issues that raise it, e.g. "complaint:service:4 open 14 days"
    support: tuple[str, ...]  # what adds weight to them (surveys, waits)


_NO_RISK = Risk(0.0, (), ())
_SELF_CHANGE = ("account:moved", "account:life_event")


def next_risk_check(
    signals: tuple[tuple[int, str], ...],
    complaints: tuple[Complaint, ...],
    unresolved_after_days: float,
    after_ms: int,
) -> int | None:
    """The first moment after ``after_ms`` at which the churn risk can rise (None: no
    such moment): when trouble becomes live (a complaint open for
    ``unresolved_after_days``, rejected or reopened; a call problem unresolved that long
    or reported again; a move or life event) or gains weight. Worked out for most events,
    so a loop rather than a generator."""
    after = int(unresolved_after_days * DAY_MS)
    first: int | None = None
    for c in complaints:
        closed = False
        for t, s in c.reports:
            if s == issues.OPEN:
                if t == c.opened_ms:
                    t += after
                elif not closed:
                    continue
                # else reopened: live at once
            else:
                closed = True
                if s != issues.REJECTED:
                    continue
            if t > after_ms and (first is None or t < first):
                first = t
    for t, code in signals:
        if code.startswith("call_unresolved:"):
            if t <= after_ms:
                t += after
        elif not (
            code.startswith(_SELF_CHANGE) or code.startswith("survey:") or code == "call_long_wait"
        ):
            continue
        if t > after_ms and (first is None or t < first):
            first = t
    return first


def risk(
    signals: tuple[tuple[int, str], ...],
    complaints: tuple[Complaint, ...],
    at_ms: int,
    since_ms: int,
    unresolved_after_days: float,
) -> Risk:
    """The weight of the trouble still live at ``at_ms`` (and that became live after
    ``since_ms``, the previous churn_risk: the same trouble never alerts twice), with
    the supporting evidence of the last RISK_WINDOW_DAYS. 0 without live trouble."""
    start = max(at_ms - RISK_WINDOW_DAYS * DAY_MS, since_ms + 1)
    after = int(unresolved_after_days * DAY_MS)
    score, live, support = 0.0, [], []
    for c in complaints:
        status = c.status_at(at_ms)
        if status is None or status == issues.RESOLVED:
            continue
        prior = [(t, s) for t, s in c.reports if t <= at_ms]
        last_t, _ = prior[-1]
        reopened = status == issues.OPEN and any(s != issues.OPEN for _, s in prior)
        if status == issues.REJECTED:
            became = last_t
        elif reopened:
            became = next(t for t, s in reversed(prior) if s == issues.OPEN)
        else:
            became = c.opened_ms + after
        if became > at_ms or not start <= became:
            continue
        score += complaint_weight(c) + 1.0
        what = (
            "rejected"
            if status == issues.REJECTED
            else ("reopened" if reopened else f"open {(at_ms - c.opened_ms) // DAY_MS} days")
        )
        live.append(f"{_day(c.opened_ms)} complaint:{c.category}:{c.severity} {what}")
    calls: dict[str, list[tuple[int, bool]]] = {}
    for t, code in signals:
        if t > at_ms:
            break
        if code.startswith("call_unresolved:"):
            calls.setdefault(code[16:], []).append((t, False))
        elif code.startswith("call:"):
            calls.setdefault(code[5:], []).append((t, True))
        elif t >= start:
            if code.startswith(_SELF_CHANGE):
                score += 4.0
                live.append(f"{_day(t)} {code}")
            elif code.startswith("survey:") or code == "call_long_wait":
                w = SURVEY_WEIGHT.get(code[7:], 0.0) if code[0] == "s" else 0.5
                if w:
                    score += w
                    support.append(f"{_day(t)} {code}")
    for reason, history in calls.items():
        run: list[int] = []
        for t, resolved in history:  # the unresolved calls since the last resolved one
            run = [] if resolved else [*run, t]
        if not run or run[-1] < at_ms - RISK_WINDOW_DAYS * DAY_MS:
            continue
        became = run[1] if len(run) >= 2 else run[0] + after
        if became > at_ms or became < start:
            continue
        base = _CALL_REASON.get(reason, {}).get(reason, 0.0)
        score += base + 0.8 * len(run)
        live.append(
            f"{_day(run[0])} {len(run)} unresolved call{'s' * (len(run) > 1)} about {reason}"
        )
    if not live:
        return _NO_RISK
    return Risk(round(score, 2), tuple(live), tuple(support))
