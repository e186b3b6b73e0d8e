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
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from schemas.events import Account, Event, Purchase, Refund, epoch_ms
from touchstream.domain import alerts as al
from touchstream.domain import defection as dfx
from touchstream.domain import lifecycle as lc
from touchstream.domain.alerts import Alert
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules, Transition

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
    # lifecycle (touchstream.domain.lifecycle)
    stage: str | None = None
    stage_since_ms: int = 0
    declined_from: str | None = None
    relationships: int = 0  # relationships started: 1 + reactivations
    relationship_start_day: int = 0
    transitions: int = 0  # transitions so far: the sequence number of the next one
    exit_pattern: str | None = None  # pattern of the last relationship that ended
    next_deadline_ms: int | None = None  # when silence next changes the stage
    recent_spend: tuple[tuple[int, float], ...] = ()  # (day, spend) of the latest days
    # defection evidence and the alert episode (defection, alerts)
    signals: tuple[tuple[int, str], ...] = ()
    defection_type: str | None = None
    defection_confidence: float = 0.0
    alert_level: int = 0  # highest alert of the open episode (0: no episode open)
    episode: int = 0
    risk_at_ms: int = 0

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


_SLOTS: tuple[str, ...] = CustomerState.__slots__  # type: ignore[attr-defined]
_new = object.__new__
_set = object.__setattr__


def evolve(s: CustomerState, **changes: Any) -> CustomerState:
    """``dataclasses.replace`` for the hot path: a copy with some fields changed, without
    re-running __init__ (replace was a third of the per-event time)."""
    new = _new(CustomerState)
    for f in _SLOTS:
        _set(new, f, changes.pop(f) if f in changes else getattr(s, f))
    if changes:
        raise TypeError(f"CustomerState has no field(s) {sorted(changes)}")
    return new


@dataclass(frozen=True, slots=True)
class Accepted:
    """The event changed the customer's state; ``version`` is the state version it made."""

    event: Event
    version: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    event: Event


Output = Accepted | Duplicate | Transition | Alert


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
    return evolve(
        s,
        purchases=s.purchases + 1,
        purchase_total=s.purchase_total + p.amount,
        first_purchase_ms=t if s.first_purchase_ms is None else min(s.first_purchase_ms, t),
        last_purchase_ms=t if s.last_purchase_ms is None else max(s.last_purchase_ms, t),
        purchase_days=days,
        first_day_spend=first_day_spend,
    )


RECENT_SPEND_DAYS = 6


def _add_day_spend(
    recent: tuple[tuple[int, float], ...], day: int, amount: float
) -> tuple[tuple[int, float], ...]:
    spend = dict(recent)
    spend[day] = spend.get(day, 0.0) + amount
    return tuple(sorted(spend.items())[-RECENT_SPEND_DAYS:])


def _relationship_days(s: CustomerState) -> tuple[int, ...]:
    return tuple(d for d in s.purchase_days if d >= s.relationship_start_day)


def _move(
    s: CustomerState, at_ms: int, to: str, reason: str, **changes: Any
) -> tuple[CustomerState, Transition]:
    at_ms = max(at_ms, s.stage_since_ms)  # a very late event never dates a stage backwards
    tr = Transition(
        s.customer_id, at_ms, s.stage, to, reason, max(s.relationships, 1), s.transitions,
        changes.get("exit_pattern"),
    )
    return evolve(s, stage=to, stage_since_ms=at_ms, transitions=s.transitions + 1,
                   **changes), tr


def _alert(
    s: CustomerState, kind: str, at_ms: int, previous: str | None, d: dfx.Defection | None,
    silent: int | None = None,
) -> tuple[CustomerState, Alert | None]:
    """Raise ``kind`` unless the open episode already went as far (no storm)."""
    if kind == "recovered":
        if s.alert_level == 0:
            return s, None
        episode, level = s.episode, 0
    else:
        if al.LEVEL[kind] <= s.alert_level:
            return s, None
        episode = s.episode + (1 if s.alert_level == 0 else 0)
        level = al.LEVEL[kind]
    dtype = d.type if d else (s.defection_type or "unknown")
    conf = d.confidence if d else s.defection_confidence
    evidence = d.evidence if d else ()
    if silent is None and s.last_purchase_ms is not None:
        silent = (at_ms - s.last_purchase_ms) // DAY_MS
    alert = Alert(
        alert_id=f"{s.customer_id}/{episode}/{kind}", customer_id=s.customer_id, at_ms=at_ms,
        kind=kind, episode=episode, stage=s.stage or "", previous_stage=previous,
        defection_type=dtype, confidence=conf, severity=al.severity(s.net_spend),
        net_spend=s.net_spend, last_purchase_ms=s.last_purchase_ms, evidence=evidence,
        message=al.sentence(kind, s.customer_id, s.stage or "", s.net_spend, silent, dtype,
                            conf, evidence),
        version=s.version,
    )
    return evolve(s, alert_level=level, episode=episode), alert


def _with_deadline(s: CustomerState, rules: Rules) -> CustomerState:
    d = lc.deadline_ms(s.stage, s.last_purchase_ms, _relationship_days(s), rules)
    if d is not None:
        d = max(d, s.stage_since_ms)  # transitions never go back in time
    return s if d == s.next_deadline_ms else evolve(s, next_deadline_ms=d)


def _weaken(
    s: CustomerState, at_ms: int, to: str, reason: str, rules: Rules
) -> tuple[CustomerState, list[Output]]:
    """Enter decline or churned, classify why, alert."""
    d = dfx.classify(s.signals, at_ms, s.purchase_days, s.last_purchase_ms)
    if to == lc.CHURNED and s.defection_type not in (None, "unknown"):
        # Decided at the decline; later silence adds no evidence.
        d = dfx.Defection(s.defection_type, s.defection_confidence, d.evidence, d.scores)
    previous = s.stage
    changes: dict[str, Any] = {"defection_type": d.type, "defection_confidence": d.confidence}
    if to == lc.DECLINE:
        changes["declined_from"] = previous
    else:
        changes["exit_pattern"] = lc.EXIT_PATTERN[s.declined_from or lc.EXPLORATION]
    s, tr = _move(s, at_ms, to, reason, **changes)
    s, alert = _alert(s, "decline" if to == lc.DECLINE else "churned", at_ms, previous, d)
    outs: list[Output] = [tr] if alert is None else [tr, alert]
    return _with_deadline(s, rules), outs


def advance(
    state: CustomerState, now_ms: int, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Fire every silence deadline due by ``now_ms`` (stream time). Each transition is
    dated at its deadline, so it does not matter when the deadline is noticed."""
    s, outs = state, []
    while s.next_deadline_ms is not None and s.next_deadline_ms <= now_ms:
        at = s.next_deadline_ms
        silent = (at - (s.last_purchase_ms or at)) // DAY_MS
        gap = lc.typical_gap_days(_relationship_days(s), rules)
        reason = f"no purchase for {silent} days (typical gap {gap:.0f} days)"
        to = lc.DECLINE if s.stage in lc.ACTIVE else lc.CHURNED
        s, o = _weaken(s, at, to, reason, rules)
        outs.extend(o)
    return s, tuple(outs)


def _on_purchase(
    s: CustomerState, t: int, rules: Rules, previous_purchase_ms: int | None
) -> tuple[CustomerState, list[Output]]:
    outs: list[Output] = []
    silent = None if previous_purchase_ms is None else (t - previous_purchase_ms) // DAY_MS
    if s.last_purchase_ms is not None and t < s.last_purchase_ms and s.stage is not None:
        return s, outs  # a late purchase: rhythm and stage already account for later ones
    if s.stage is None or s.stage == lc.CHURNED:
        reactivation = s.stage == lc.CHURNED
        s = evolve(s, relationships=s.relationships + 1, relationship_start_day=t // DAY_MS,
                    declined_from=None, defection_type=None, defection_confidence=0.0,
                    recent_spend=tuple(x for x in s.recent_spend if x[0] >= t // DAY_MS))
        s, tr = _move(s, t, lc.EXPLORATION, "reactivation" if reactivation else "first purchase")
        outs.append(tr)
        if reactivation:
            s, alert = _alert(s, "recovered", t, lc.CHURNED, None, silent)
            outs.extend([alert] if alert else [])
    elif s.stage == lc.DECLINE:
        back = s.declined_from or lc.EXPLORATION
        s, tr = _move(s, t, back, "purchase after decline", declined_from=None,
                      defection_type=None, defection_confidence=0.0)
        s, alert = _alert(s, "recovered", t, lc.DECLINE, None, silent)
        outs.extend([tr, alert] if alert else [tr])
    elif s.alert_level == 1 and t - s.risk_at_ms >= al.RISK_RECOVERY_DAYS * DAY_MS:
        s, alert = _alert(s, "recovered", t, s.stage, None, silent)
        outs.extend([alert] if alert else [])
    if s.stage in (lc.EXPLORATION, lc.FORMATION):
        up = lc.promotion(s.stage, _relationship_days(s), s.relationship_start_day * DAY_MS, t,
                          s.recent_spend, rules)
        if up is not None:
            s, tr = _move(s, t, up[0], up[1])
            outs.append(tr)
    return s, outs


def _on_signal(
    s: CustomerState, event: Event, t: int, rules: Rules
) -> tuple[CustomerState, list[Output]]:
    """Negative touchpoints: an account closed starts the decline at once; enough
    recent evidence raises churn_risk while the customer is still active."""
    if s.stage not in lc.ACTIVE:
        return s, []
    if isinstance(event, Account) and event.change == "closed":
        if s.last_purchase_ms is not None and t < s.last_purchase_ms:
            return s, []  # closed before a purchase we already have: reopened since
        return _weaken(s, t, lc.DECLINE, "account closed", rules)
    if s.alert_level == 0 and (
        dfx.risk_score(s.signals, t, s.risk_at_ms) >= al.CHURN_RISK_MIN_SCORE
    ):
        d = dfx.classify(s.signals, t, s.purchase_days)
        s, alert = _alert(s, "churn_risk", t, s.stage, d)
        if alert is not None:
            s = evolve(s, risk_at_ms=t)
            return s, [alert]
    return s, []


def step(
    state: CustomerState | None, event: Event, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Apply one event to a customer's state. Duplicated event ids change nothing.

    Deadlines due by the event's time fire first, then the event counts (RFM), then
    it may move the lifecycle (purchases) or raise a churn risk (negative touchpoints).
    """
    s = state if state is not None else CustomerState(customer_id=event.customer_id)
    h = id_hash(event.event_id)
    if h in s.recent_ids:
        return s, (Duplicate(event),)
    t = epoch_ms(event.occurred_at)
    s, fired = advance(s, t - rules.allowed_lateness_ms, rules)
    s = evolve(
        s,
        version=s.version + 1,
        first_event_ms=t if s.version == 0 else min(s.first_event_ms, t),
        last_event_ms=max(s.last_event_ms, t),
        recent_ids=(*s.recent_ids[-(DEDUP_WINDOW - 1) :], h),
        signals=dfx.record(s.signals, t, dfx.signals_of(event)),
    )
    outs: list[Output] = [*fired, Accepted(event, s.version)]
    if isinstance(event, Purchase):
        previous_purchase_ms = s.last_purchase_ms
        s = _add_purchase(s, event, t)
        spend = _add_day_spend(s.recent_spend, t // DAY_MS, float(event.amount))
        s = evolve(s, recent_spend=spend)
        s, more = _on_purchase(s, t, rules, previous_purchase_ms)
    else:
        if isinstance(event, Refund):
            s = evolve(s, refunds=s.refunds + 1, refund_total=s.refund_total + event.amount)
        s, more = _on_signal(s, event, t, rules)
    outs.extend(more)
    return _with_deadline(s, rules), tuple(outs)


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
        elif f in ("recent_spend", "signals"):
            v = tuple(tuple(x) for x in v)
        kw[f] = v
    return CustomerState(**kw)
