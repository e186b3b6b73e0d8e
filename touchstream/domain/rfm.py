"""Per-customer running state: RFM and the lifetimes-compatible summary, in event time.

Pure functions only: no I/O, no clock. ``step(state | None, event) -> (state, outputs)``
is the whole update; the shell (agents/) loops it over batches and persists the result.

Purchase days are UTC calendar days. The summary follows
``lifetimes.utils.summary_data_from_transaction_data(freq="D")``:
frequency = repeat purchase days, recency = days from the first to the last purchase
day, T = days from the first purchase day to the as-of day, monetary_value = mean spend
of the repeat purchase days (0 when there are none).

``CustomerState`` is immutable. Internally every update runs on a ``Working`` copy (the
same fields, lists where they grow), so a batch of one customer's events copies the
state once and freezes it once (``step_many``); the shell may keep a ``Working`` for
the length of a batch (agents.pipeline) as long as nobody else sees it.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from schemas.events import Event, epoch_ms
from touchstream.domain import alerts as al
from touchstream.domain import defection as dfx
from touchstream.domain import issues as iss
from touchstream.domain import lifecycle as lc
from touchstream.domain.alerts import Alert
from touchstream.domain.issues import Complaint
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules, Transition
from touchstream.domain.units import DAY_MS

# How many recent event ids each customer remembers to drop redeliveries. At-least-once
# redelivery replays a short tail, so a small window catches it; older duplicates still
# collapse in ClickHouse (events are keyed by event_id) but would count twice in state.
DEDUP_WINDOW = 64
ZERO = Decimal(0)


def id_hash(event_id: str) -> int:
    """A stable 32-bit fingerprint of an event id (stable across processes, unlike
    hash()). CRC-32: ids that differ only within 4 consecutive bytes (sequence numbers)
    never collide; otherwise a new id matches one of the window's 64 with odds ~1.5e-8."""
    return _crc32(event_id.encode())


_crc32 = zlib.crc32
_ORDER = sys.byteorder  # recent_ids' bytes are array("I")'s, as the stored form keeps them
_WINDOW_BYTES = 4 * DEDUP_WINDOW


class _Derived:
    """The summary values derived from the stored fields (of either form of the state)."""

    __slots__ = ()
    purchase_days: Sequence[int]
    purchase_total: Decimal
    refund_total: Decimal
    first_day_spend: Decimal
    last_purchase_ms: int | None

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
class CustomerState(_Derived):
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
    recent_ids: tuple[int, ...] = ()  # id_hash of the latest DEDUP_WINDOW events
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
    # complaints followed to their outcome, discounted purchase days (defection, issues),
    # and the moment up to which churn risk has been checked
    complaints: tuple[Complaint, ...] = ()
    discount_days: tuple[int, ...] = ()
    risk_checked_ms: int = 0


FIELDS: tuple[str, ...] = CustomerState.__slots__
_DEFAULTS = CustomerState("")
_new = object.__new__
_set = object.__setattr__


class Working(_Derived):
    """A customer's state while events apply: CustomerState's fields, mutable, with
    ``purchase_days`` a list, ``recent_ids`` a bytearray of the fingerprints as
    ``array("I")`` bytes, oldest first (compact, and what the stored form holds), the
    typical purchase gap cached (it changes only with the relationship's purchase days),
    and ``next_deadline_ms`` computed when it is read after a change (a batch's events
    seldom need it: see ``_fire_due``)."""

    __slots__ = (
        *(f for f in FIELDS if f != "next_deadline_ms"),
        "_deadline",
        "_deadline_rules",
        "_gap",
        "_gap_rules",
    )
    customer_id: str
    version: int
    first_event_ms: int
    last_event_ms: int
    purchases: int
    refunds: int
    first_purchase_ms: int | None
    purchase_days: list[int]
    recent_ids: bytearray
    stage: str | None
    stage_since_ms: int
    declined_from: str | None
    relationships: int
    relationship_start_day: int
    transitions: int
    exit_pattern: str | None
    recent_spend: tuple[tuple[int, float], ...]
    signals: tuple[tuple[int, str], ...]
    defection_type: str | None
    defection_confidence: float
    alert_level: int
    episode: int
    risk_at_ms: int
    complaints: tuple[Complaint, ...]
    discount_days: tuple[int, ...]
    risk_checked_ms: int
    _deadline: int | None
    _deadline_rules: Rules | None  # set: _deadline is stale, compute it with these rules
    _gap: float
    _gap_rules: Rules | None  # the rules _gap was computed with (None: stale)

    def __init__(self, customer_id: str) -> None:
        """A customer without events."""
        for f in FIELDS:
            setattr(self, f, getattr(_DEFAULTS, f))
        self.customer_id = customer_id
        self.purchase_days = []
        self.recent_ids = bytearray()
        self._gap_rules = None

    @property
    def next_deadline_ms(self) -> int | None:
        """When the state next changes by itself: silence changes the stage
        (``lc.deadline_ms``, never before ``stage_since_ms``) or the churn risk is due
        for a check (``risk_check_ms``), whichever comes first."""
        rules = self._deadline_rules
        if rules is not None:
            self._deadline_rules = None
            d = self.silence_deadline_ms(rules)
            r = self.risk_check_ms(rules)
            self._deadline = d if r is None else r if d is None else min(d, r)
        return self._deadline

    @next_deadline_ms.setter
    def next_deadline_ms(self, value: int | None) -> None:
        self._deadline, self._deadline_rules = value, None

    def silence_deadline_ms(self, rules: Rules) -> int | None:
        stage, last = self.stage, self.last_purchase_ms
        if last is None or stage is None or stage == lc.CHURNED:
            return None
        d = lc.deadline_ms(stage, last, self.typical_gap(rules), rules)
        return None if d is None else max(d, self.stage_since_ms)  # never back in time

    def risk_check_ms(self, rules: Rules) -> int | None:
        """The next moment live trouble may raise churn_risk (None: nothing to check):
        only while active with no alert episode open."""
        if (
            (not self.signals and not self.complaints)
            or self.alert_level
            or self.stage not in lc.ACTIVE
        ):
            return None
        after = self.risk_checked_ms
        return min(
            (
                c
                for c in dfx.risk_checks(self.signals, self.complaints, rules.unresolved_after_days)
                if c > after
            ),
            default=None,
        )

    def __repr__(self) -> str:
        return f"Working({self.freeze()!r})"

    @staticmethod
    def of(state: CustomerState) -> Working:
        """A working copy of ``state``."""
        w = _new(Working)
        for f in FIELDS:
            setattr(w, f, getattr(state, f))
        w.purchase_days = list(state.purchase_days)
        w.recent_ids = bytearray(array("I", state.recent_ids))
        w._gap_rules = None
        return w

    def freeze(self) -> CustomerState:
        s = _new(CustomerState)
        for f in FIELDS:
            _set(s, f, getattr(self, f))
        _set(s, "purchase_days", tuple(self.purchase_days))
        _set(s, "recent_ids", tuple(array("I", self.recent_ids)))
        return s

    def typical_gap(self, rules: Rules) -> float:
        """``lc.typical_gap_days`` of the current relationship's purchase days."""
        if self._gap_rules is not rules:
            days, k = self.purchase_days, rules.rhythm_window + 1
            lo = bisect_left(days, self.relationship_start_day)
            if k > 0:
                lo = max(lo, len(days) - k)  # typical_gap_days reads only the latest k
            self._gap = lc.typical_gap_days(days[lo:], rules)
            self._gap_rules = rules
        return self._gap

    def relationship_days(self) -> tuple[int, ...]:
        """The purchase days of the current relationship."""
        days = self.purchase_days
        return tuple(days[bisect_left(days, self.relationship_start_day) :])


@dataclass(frozen=True, slots=True)
class Accepted:
    """The event changed the customer's state; ``version`` is the state version it made."""

    event: Event
    version: int


@dataclass(frozen=True, slots=True)
class Duplicate:
    event: Event


Output = Accepted | Duplicate | Transition | Alert


def _add_purchase(w: Working, amount: Decimal, t: int) -> None:
    day = t // DAY_MS
    days = w.purchase_days
    if not days or day < days[0]:
        w.first_day_spend = amount  # an earlier day arrived late: it is the new first day
    elif day == days[0]:
        w.first_day_spend += amount
    if not days or day > days[-1]:
        days.append(day)
        w._gap_rules = None
    else:
        i = bisect_left(days, day)
        if days[i] != day:
            days.insert(i, day)
            w._gap_rules = None
    w.purchases += 1
    w.purchase_total += amount
    fp, lp = w.first_purchase_ms, w.last_purchase_ms
    w.first_purchase_ms = t if fp is None or t < fp else fp
    w.last_purchase_ms = t if lp is None or t > lp else lp
    # The spend of the latest RECENT_SPEND_DAYS days, sorted by day: a purchase on the
    # latest day or a later one (the usual case) adds or appends at the end.
    recent, spend = w.recent_spend, float(amount)
    if not recent or day > recent[-1][0]:
        recent = (*recent, (day, 0.0 + spend))
    elif day == recent[-1][0]:
        recent = (*recent[:-1], (day, recent[-1][1] + spend))
    else:
        by_day = dict(recent)
        by_day[day] = by_day.get(day, 0.0) + spend
        recent = tuple(sorted(by_day.items()))
    w.recent_spend = recent[-RECENT_SPEND_DAYS:] if len(recent) > RECENT_SPEND_DAYS else recent


RECENT_SPEND_DAYS = 6


def _move(w: Working, at_ms: int, to: str, reason: str, pattern: str | None = None) -> Transition:
    at_ms = max(at_ms, w.stage_since_ms)  # a very late event never dates a stage backwards
    tr = Transition(
        w.customer_id,
        at_ms,
        w.stage,
        to,
        reason,
        max(w.relationships, 1),
        w.transitions,
        pattern,
    )
    w.stage, w.stage_since_ms, w.transitions = to, at_ms, w.transitions + 1
    return tr


def _alert(
    w: Working,
    kind: str,
    at_ms: int,
    previous: str | None,
    d: dfx.Defection | None,
    silent: int | None = None,
    open_issues: tuple[str, ...] = (),
) -> Alert | None:
    """Raise ``kind`` unless the open episode already went as far (no storm)."""
    if kind == "recovered":
        if w.alert_level == 0:
            return None
        episode, level = w.episode, 0
    else:
        if al.LEVEL[kind] <= w.alert_level:
            return None
        episode = w.episode + (1 if w.alert_level == 0 else 0)
        level = al.LEVEL[kind]
    dtype = d.type if d else (w.defection_type or "unknown")
    conf = d.confidence if d else w.defection_confidence
    evidence = d.evidence if d else ()
    if silent is None and w.last_purchase_ms is not None:
        silent = (at_ms - w.last_purchase_ms) // DAY_MS
    net_spend = w.net_spend
    alert = Alert(
        alert_id=f"{w.customer_id}/{episode}/{kind}",
        customer_id=w.customer_id,
        at_ms=at_ms,
        kind=kind,
        episode=episode,
        stage=w.stage or "",
        previous_stage=previous,
        defection_type=dtype,
        confidence=conf,
        severity=al.severity(net_spend),
        net_spend=net_spend,
        last_purchase_ms=w.last_purchase_ms,
        evidence=evidence,
        message=al.sentence(
            kind,
            w.customer_id,
            w.stage or "",
            net_spend,
            silent,
            dtype,
            conf,
            evidence,
            open_issues,
        ),
        version=w.version,
        open_issues=open_issues,
    )
    w.alert_level, w.episode = level, episode
    return alert


def _set_deadline(w: Working, rules: Rules) -> None:
    w._deadline_rules = rules  # computed when next read


def _fire_due(w: Working, due: int, rules: Rules) -> list[Output]:
    """``_advance`` to ``due``, without computing a stale deadline that cannot be due:
    it is never earlier than the last purchase plus the shortest silence."""
    if w._deadline_rules is not None and not w.signals and not w.complaints:
        stage, last = w.stage, w.last_purchase_ms
        if last is None or stage is None or stage == lc.CHURNED:
            return []
        shortest = rules.churn_min_days if stage == lc.DECLINE else rules.decline_min_days
        if due < last + int(shortest * DAY_MS):
            return []
    d = w.next_deadline_ms
    return _advance(w, due, rules) if d is not None and d <= due else []


def _weaken(w: Working, at_ms: int, to: str, reason: str, rules: Rules) -> list[Output]:
    """Enter decline or churned, classify why, alert."""
    d = dfx.classify(
        w.signals,
        at_ms,
        w.purchase_days,
        w.last_purchase_ms,
        w.complaints,
        w.discount_days,
        rules.quick_resolution_days,
    )
    w.risk_checked_ms = max(w.risk_checked_ms, at_ms)  # no churn risk while declining
    if to == lc.CHURNED and w.defection_type not in (None, "unknown"):
        # Decided at the decline; later silence adds no evidence.
        d = dfx.Defection(w.defection_type, w.defection_confidence, d.evidence, d.scores)
    previous = w.stage
    pattern = None
    if to == lc.DECLINE:
        w.declined_from = previous
    else:
        pattern = w.exit_pattern = lc.EXIT_PATTERN[w.declined_from or lc.EXPLORATION]
    w.defection_type, w.defection_confidence = d.type, d.confidence
    tr = _move(w, at_ms, to, reason, pattern)
    alert = _alert(w, "decline" if to == lc.DECLINE else "churned", at_ms, previous, d)
    _set_deadline(w, rules)
    return [tr] if alert is None else [tr, alert]


def _advance(w: Working, now_ms: int, rules: Rules) -> list[Output]:
    outs: list[Output] = []
    while (at := w.next_deadline_ms) is not None and at <= now_ms:
        check = w.risk_check_ms(rules)
        if check is not None and check <= at:
            outs.extend(_check_risk(w, check, rules))
            continue
        silent = (at - (w.last_purchase_ms or at)) // DAY_MS
        reason = f"no purchase for {silent} days (typical gap {w.typical_gap(rules):.0f} days)"
        to = lc.DECLINE if w.stage in lc.ACTIVE else lc.CHURNED
        outs.extend(_weaken(w, at, to, reason, rules))
    return outs


def _check_risk(w: Working, at_ms: int, rules: Rules) -> list[Output]:
    """Raise churn_risk, dated ``at_ms``, if the trouble live then (decided from what
    happened by then only, so arrival order does not matter) weighs enough."""
    w.risk_checked_ms = at_ms
    w._deadline_rules = rules
    if (
        w.stage not in lc.ACTIVE
        or w.alert_level
        or w.first_purchase_ms is None
        or w.first_purchase_ms > at_ms
        or w.relationship_start_day * DAY_MS > at_ms
    ):
        return []
    r = dfx.risk(w.signals, w.complaints, at_ms, w.risk_at_ms, rules.unresolved_after_days)
    if r.score < al.CHURN_RISK_MIN_SCORE:
        return []
    d = dfx.classify(
        w.signals,
        at_ms,
        w.purchase_days,
        None,
        w.complaints,
        w.discount_days,
        rules.quick_resolution_days,
    )
    d = dfx.Defection(d.type, d.confidence, (*r.live, *r.support), d.scores)
    alert = _alert(w, "churn_risk", at_ms, w.stage, d, open_issues=r.live)
    if alert is None:
        return []
    w.risk_at_ms = at_ms
    return [alert]


def advance(
    state: CustomerState, now_ms: int, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Fire every silence deadline due by ``now_ms`` (stream time). Each transition is
    dated at its deadline, so it does not matter when the deadline is noticed."""
    if state.next_deadline_ms is None or state.next_deadline_ms > now_ms:
        return state, ()
    w = Working.of(state)
    outs = _advance(w, now_ms, rules)
    return w.freeze(), tuple(outs)


def advance_working(w: Working, now_ms: int, rules: Rules = DEFAULT_RULES) -> list[Output]:
    """``advance`` on a working copy, in place."""
    return _advance(w, now_ms, rules)


def _on_purchase(
    w: Working, t: int, rules: Rules, previous_purchase_ms: int | None
) -> list[Output]:
    stage = w.stage
    if stage == lc.STABILITY and w.alert_level != 1:
        return []  # the usual case: nothing below applies
    outs: list[Output] = []
    silent = None if previous_purchase_ms is None else (t - previous_purchase_ms) // DAY_MS
    if stage is not None and w.last_purchase_ms is not None and t < w.last_purchase_ms:
        return outs  # a late purchase: rhythm and stage already account for later ones
    if stage is None or stage == lc.CHURNED:
        reactivation = stage == lc.CHURNED
        day = t // DAY_MS
        w.relationships += 1
        w.relationship_start_day = day
        w._gap_rules = None
        w.declined_from = w.defection_type = None
        w.defection_confidence = 0.0
        w.recent_spend = tuple(x for x in w.recent_spend if x[0] >= day)
        w.risk_checked_ms = max(w.risk_checked_ms, t)  # a new relationship: fresh checks
        outs.append(
            _move(w, t, lc.EXPLORATION, "reactivation" if reactivation else "first purchase")
        )
        if reactivation and (alert := _alert(w, "recovered", t, lc.CHURNED, None, silent)):
            outs.append(alert)
    elif stage == lc.DECLINE:
        back = w.declined_from or lc.EXPLORATION
        w.declined_from = w.defection_type = None
        w.defection_confidence = 0.0
        w.risk_checked_ms = max(w.risk_checked_ms, t)  # trouble while declining is spent
        outs.append(_move(w, t, back, "purchase after decline"))
        if alert := _alert(w, "recovered", t, lc.DECLINE, None, silent):
            outs.append(alert)
    elif w.alert_level == 1 and t - w.risk_at_ms >= al.RISK_RECOVERY_DAYS * DAY_MS:
        if alert := _alert(w, "recovered", t, stage, None, silent):
            outs.append(alert)
            w.risk_checked_ms = max(w.risk_checked_ms, t)
    if w.stage in (lc.EXPLORATION, lc.FORMATION):
        up = lc.promotion(
            w.stage,
            w.relationship_days(),
            w.relationship_start_day * DAY_MS,
            t,
            w.recent_spend,
            rules,
        )
        if up is not None:
            outs.append(_move(w, t, up[0], up[1]))
    return outs


def _on_signal(w: Working, event: Event, t: int, rules: Rules) -> list[Output]:
    """An account closed starts the decline at once. (Other trouble raises churn_risk
    through the risk checks, once it is live: ``_check_risk``.)"""
    if w.stage not in lc.ACTIVE:
        return []
    if event.type == "account" and event.change == "closed":
        if w.last_purchase_ms is not None and t < w.last_purchase_ms:
            return []  # closed before a purchase we already have: reopened since
        return _weaken(w, t, lc.DECLINE, "account closed", rules)
    return []


def apply(
    w: Working, event: Event, t: int, rules: Rules = DEFAULT_RULES
) -> tuple[int, list[Output]] | None:
    """``step`` on a working copy, in place: None for a duplicate (``w`` unchanged),
    else ``(n, outputs)``: the transitions and alerts, the first ``n`` of them fired by
    deadlines before the event counted. ``t`` is ``epoch_ms(event.occurred_at)``."""
    h = _crc32(event.event_id.encode()).to_bytes(4, _ORDER)  # id_hash, as stored
    ids = w.recent_ids
    i = ids.find(h)
    while i > 0 and i & 3:  # a match across two fingerprints: look further
        i = ids.find(h, i + 1)
    if i >= 0:
        return None
    due = t - rules.allowed_lateness_ms
    if w._deadline_rules is None:
        d = w._deadline
        fired = _advance(w, due, rules) if d is not None and d <= due else None
    else:
        fired = _fire_due(w, due, rules)
    if w.version == 0 or t < w.first_event_ms:
        w.first_event_ms = t
    w.version += 1
    if t > w.last_event_ms:
        w.last_event_ms = t
    if len(ids) >= _WINDOW_BYTES:
        del ids[: len(ids) - _WINDOW_BYTES + 4]  # the oldest
    ids += h
    codes = dfx.signals_of(event)
    if codes:
        w.signals = dfx.record(w.signals, t, codes)
    if event.type == "complaint":  # compared on the event, so the type checker narrows it
        w.complaints = iss.report(
            w.complaints, event.complaint_id, event.category, event.severity, event.status, t
        )
    elif (
        event.type == "purchase"
        and event.discount is not None
        and event.discount >= dfx.DISCOUNT_MIN
    ):
        w.discount_days = dfx.add_discount_day(w.discount_days, t // DAY_MS)
    if event.type == "purchase":
        previous_purchase_ms = w.last_purchase_ms
        _add_purchase(w, event.amount, t)
        more = _on_purchase(w, t, rules, previous_purchase_ms)
    else:
        if event.type == "refund":
            w.refunds += 1
            w.refund_total += event.amount
        more = _on_signal(w, event, t, rules)
    w._deadline_rules = rules  # the deadline is computed when next read
    if fired:
        return len(fired), fired + more
    return 0, more


def step(
    state: CustomerState | None, event: Event, rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState, tuple[Output, ...]]:
    """Apply one event to a customer's state. Duplicated event ids change nothing.

    Deadlines due by the event's time fire first, then the event counts (RFM), then
    it may move the lifecycle (purchases) or raise a churn risk (negative touchpoints).
    """
    s = state if state is not None else CustomerState(customer_id=event.customer_id)
    if id_hash(event.event_id) in s.recent_ids:
        return s, (Duplicate(event),)
    w = Working.of(s)
    n, outs = apply(w, event, epoch_ms(event.occurred_at), rules)  # type: ignore[misc]
    return w.freeze(), (*outs[:n], Accepted(event, w.version), *outs[n:])


def step_many(
    state: CustomerState | None, events: Iterable[Event], rules: Rules = DEFAULT_RULES
) -> tuple[CustomerState | None, list[Output]]:
    """Fold one customer's events through ``step``, copying the state once."""
    w = None if state is None else Working.of(state)
    outputs: list[Output] = []
    for ev in events:
        if w is None:
            w = Working(ev.customer_id)
        r = apply(w, ev, epoch_ms(ev.occurred_at), rules)
        if r is None:
            outputs.append(Duplicate(ev))
        else:
            n, outs = r
            outputs.extend((*outs[:n], Accepted(ev, w.version), *outs[n:]))
    return (state if w is None else w.freeze()), outputs


def step_batch(
    states: Mapping[str, CustomerState], events: Iterable[Event]
) -> tuple[dict[str, CustomerState], list[Output]]:
    """Fold a batch through ``step``. Returns only the customers whose state changed.

    Each customer's events are applied in their order within the batch; customers do
    not affect each other, so the interleaving across customers never matters.
    """
    working: dict[str, Working] = {}
    outputs: list[Output] = []
    for ev in events:
        cid = ev.customer_id
        w = working.get(cid)
        if w is None:
            before = states.get(cid)
            w = Working.of(before) if before is not None else Working(cid)
        r = apply(w, ev, epoch_ms(ev.occurred_at))
        if r is None:
            outputs.append(Duplicate(ev))
            continue
        working[cid] = w
        n, outs = r
        outputs.extend((*outs[:n], Accepted(ev, w.version), *outs[n:]))
    return {c: w.freeze() for c, w in working.items()}, outputs
