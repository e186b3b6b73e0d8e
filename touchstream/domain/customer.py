"""A customer's running state, in its two forms, and the RFM summary derived from it.

``CustomerState`` is the immutable form: what is stored (touchstream.domain.codec), written
to ClickHouse (sinks/rows.py) and shown. ``Working`` is the same fields, mutable, with
lists where they grow: every update runs on one (touchstream.domain.update), so a batch of
one customer's events copies the state once and freezes it once; the shell may keep a
``Working`` for the length of a batch (agents.processor) as long as nobody else sees it.

Purchase days are UTC calendar days. The summary follows
``lifetimes.utils.summary_data_from_transaction_data(freq="D")``:
frequency = repeat purchase days, recency = days from the first to the last purchase
day, T = days from the first purchase day to the as-of day, monetary_value = mean spend
of the repeat purchase days (0 when there are none).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING

from schemas.events import Event
from touchstream.domain import defection, lifecycle
from touchstream.domain.alerts import Alert
from touchstream.domain.issues import Complaint
from touchstream.domain.lifecycle import Rules, Transition
from touchstream.domain.units import DAY_MS

if TYPE_CHECKING:
    from touchstream.domain.btyd import Model, Scores

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
        (``lifecycle.deadline_ms``, never before ``stage_since_ms``) or the churn risk is due
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
        if last is None or stage is None or stage == lifecycle.CHURNED:
            return None
        d = lifecycle.deadline_ms(stage, last, self.typical_gap(rules), rules)
        return None if d is None else max(d, self.stage_since_ms)  # never back in time

    def risk_check_ms(self, rules: Rules) -> int | None:
        """The next moment live trouble may raise churn_risk (None: nothing to check):
        only while active with no alert episode open."""
        if (
            (not self.signals and not self.complaints)
            or self.alert_level
            or self.stage not in lifecycle.ACTIVE
        ):
            return None
        return defection.next_risk_check(
            self.signals, self.complaints, rules.unresolved_after_days, self.risk_checked_ms
        )

    def remember(self, event_id: str) -> bool:
        """Record ``event_id`` among the latest DEDUP_WINDOW: False if it is there already
        (a redelivery: nothing changes)."""
        h = _crc32(event_id.encode()).to_bytes(4, _ORDER)  # id_hash, as stored
        ids = self.recent_ids
        i = ids.find(h)
        while i > 0 and i & 3:  # a match across two fingerprints: look further
            i = ids.find(h, i + 1)
        if i >= 0:
            return False
        if len(ids) >= _WINDOW_BYTES:
            del ids[: len(ids) - _WINDOW_BYTES + 4]  # the oldest
        ids += h
        return True

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
        """``lifecycle.typical_gap_days`` of the current relationship's purchase days."""
        if self._gap_rules is not rules:
            days, k = self.purchase_days, rules.rhythm_window + 1
            lo = bisect_left(days, self.relationship_start_day)
            if k > 0:
                lo = max(lo, len(days) - k)  # typical_gap_days reads only the latest k
            self._gap = lifecycle.typical_gap_days(days[lo:], rules)
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


RECENT_SPEND_DAYS = 6  # days of spend kept for promotion by spend (lifecycle.promotion)


def add_purchase(w: Working, amount: Decimal, t: int) -> None:
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


def churn_scores(
    model: Model, s: CustomerState | Working, as_of_ms: int | None = None
) -> Scores | None:
    """The churn model's four values for a customer as of ``as_of_ms`` (default: its
    latest event or stage change, so a replay scores the same), or None before its first
    purchase. ``T`` never goes before the last purchase day."""
    days = s.purchase_days
    if not days:
        return None
    if as_of_ms is None:
        as_of_ms = max(s.last_event_ms, s.stage_since_ms)
    first, last = days[0], days[-1]
    x = len(days) - 1
    day = as_of_ms // DAY_MS
    m = float((s.purchase_total - s.first_day_spend) / x) if x else 0.0
    try:
        return model.score(x, last - first, (day if day > last else last) - first, m)
    except (ArithmeticError, ValueError):
        # Parameters the formulas cannot evaluate for this customer (a series that does
        # not converge, an overflow): no values rather than a stopped stream. The fit
        # does not choose such a model (touchstream/fitting.py), one loaded by hand may be.
        return None
