"""RFM scores, segments, the customer behaviour matrix and account flags (docs/scoring.md).

Pure: no I/O, no clock, immutable values. The shell keeps one ``RfmSketches`` per worker
(the population of its partitions), feeds it ``(old point, new point)`` deltas of the
customers a batch changed, merges the sketches of all partitions and turns them into
``Cutoffs`` (quintiles of the current population). Scores, segments and flags are then
plain functions of a customer's values and those cut-offs.

The quantile sketch behind the cut-offs is ``touchstream.domain.sketch``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, NamedTuple, cast

from touchstream.domain.sketch import (
    DAY_EXACT_BELOW,
    EXACT_BELOW,
    LOG_GAMMA,
    LOG_OFFSET,
    MAX_MAGNITUDE,
    REAL,
    Sketch,
    bucket_key,
    freeze,
    move_count,
    move_key,
)

# -- the RFM population ------------------------------------------------------------------

RATE_MIN_WINDOW_DAYS = 365


def purchase_rate(
    purchase_days: int,
    first_day: int,
    last_day: int,
    *,
    min_window_days: int = RATE_MIN_WINDOW_DAYS,
) -> float:
    """Purchase days per year while active: purchase days * 365 / the days from the first
    to the last purchase day (inclusive), counting at least ``min_window_days`` (so a
    customer in their first year is measured by their purchase days so far). It changes
    only on a purchase, never with stream time."""
    return purchase_days * 365 / max(last_day - first_day + 1, min_window_days)


class RfmPoint(NamedTuple):
    """What the population sketches hold of one customer who bought at least once."""

    first_day: int  # first purchase day (days since 1970, UTC)
    last_day: int  # last purchase day
    purchase_days: int  # distinct purchase days
    net_spend: float  # purchases - refunds

    @property
    def rate(self) -> float:
        """Purchase days per year (``purchase_rate``): the behaviour matrix's frequency."""
        return purchase_rate(self.purchase_days, self.first_day, self.last_day)

    @property
    def amount(self) -> float:
        """Net spend per purchase day: the behaviour matrix's average purchase."""
        return self.net_spend / self.purchase_days


def point_of(state: Any) -> RfmPoint | None:
    """The ``RfmPoint`` of a ``rfm.CustomerState`` (None before the first purchase)."""
    days = state.purchase_days
    if not days:
        return None
    return RfmPoint(days[0], days[-1], len(days), float(state.net_spend))


PointKeys = tuple[int, int, int, int, int]


def _real_key(x: float) -> int:
    """``bucket_key(x, REAL)``, the common case (x >= 1) inlined."""
    if 1.0 <= x <= MAX_MAGNITUDE:
        return REAL + LOG_OFFSET + math.ceil(math.log(x) / LOG_GAMMA)
    return bucket_key(x, REAL)


def point_keys(state: Any) -> PointKeys | None:
    """The bucket keys of ``point_of(state)`` in the five sketches of an ``RfmSketches``
    (recency, frequency, monetary, rate, amount): what ``RfmSketches.move`` takes. None
    before the first purchase."""
    days = state.purchase_days
    if not days:
        return None
    first, last, n = days[0], days[-1], len(days)
    net = float(state.purchase_total - state.refund_total)
    return (
        last if -DAY_EXACT_BELOW < last < DAY_EXACT_BELOW else bucket_key(last, DAY_EXACT_BELOW),
        n if n < EXACT_BELOW else bucket_key(n, EXACT_BELOW),
        _real_key(net),
        _real_key(n * 365 / max(last - first + 1, RATE_MIN_WINDOW_DAYS)),  # RfmPoint.rate
        _real_key(net / n),  # RfmPoint.amount
    )


def keys_of(p: RfmPoint | None) -> PointKeys | None:
    """``point_keys`` of a point."""
    if p is None:
        return None
    return (
        bucket_key(p.last_day, DAY_EXACT_BELOW),
        bucket_key(p.purchase_days, EXACT_BELOW),
        bucket_key(p.net_spend, REAL),
        bucket_key(p.rate, REAL),
        bucket_key(p.amount, REAL),
    )


def _axes(p: RfmPoint | None) -> tuple[Any, ...]:
    if p is None:
        return (None,) * 5
    return (p.last_day, p.purchase_days, p.net_spend, p.rate, p.amount)


RECORD_VERSION = 1
_NONE5 = (None,) * 5


@dataclass(frozen=True, slots=True)
class RfmSketches:
    """The population of customers who bought: ``recency`` over last purchase days,
    ``frequency`` over purchase days, ``monetary`` over net spend, and for the behaviour
    matrix ``rate`` (purchase days per year) and ``amount`` (net spend per purchase day).

    Recency is kept as the last purchase DAY (exact buckets): ranking last purchase days
    ranks recency at any as-of time, so the sketch does not go stale as time passes."""

    recency: Sketch = field(default_factory=lambda: Sketch(exact_below=DAY_EXACT_BELOW))
    frequency: Sketch = field(default_factory=Sketch)
    monetary: Sketch = field(default_factory=lambda: Sketch(exact_below=REAL))
    rate: Sketch = field(default_factory=lambda: Sketch(exact_below=REAL))
    amount: Sketch = field(default_factory=lambda: Sketch(exact_below=REAL))

    def _sketches(self) -> tuple[Sketch, ...]:
        return (self.recency, self.frequency, self.monetary, self.rate, self.amount)

    @property
    def count(self) -> int:
        """Customers in the population."""
        return self.recency.count

    def apply(self, deltas: Iterable[tuple[RfmPoint | None, RfmPoint | None]]) -> RfmSketches:
        """Apply ``(old point or None, new point or None)`` per changed customer (old: what
        was added for them before; None for a first purchase), one copy per batch. A pair
        with ``old == new`` changes nothing and is skipped."""
        sk = self._sketches()
        es = [s.exact_below for s in sk]
        counts = [dict(s.bins) for s in sk]
        for old, new in deltas:
            if old == new:
                continue
            for i, o, n in zip(range(5), _axes(old), _axes(new), strict=True):
                move_count(counts[i], es[i], o, n)
        return RfmSketches(*(Sketch(freeze(c), e) for c, e in zip(counts, es, strict=True)))

    def move(
        self, deltas: Iterable[tuple[PointKeys | None, PointKeys | None]], strict: bool = True
    ) -> RfmSketches:
        """``apply`` with the points' bucket keys (``point_keys``): the same sketches,
        without computing a bucket twice. ``strict=False``: a customer whose old keys
        are not all in the sketches (a state that moved from another partition's, or was
        changed behind the population's back) is counted afresh instead of raising."""
        sk = self._sketches()
        counts = [dict(s.bins) for s in sk]
        for old, new in deltas:
            if old == new:
                continue
            if (
                old is not None
                and not strict
                and not all(c.get(k, 0) > 0 for c, k in zip(counts, old, strict=True))
            ):
                old = None
            for c, ko, kn in zip(counts, old or _NONE5, new or _NONE5, strict=True):
                move_key(c, ko, kn)
        return RfmSketches(
            *(Sketch(freeze(c), s.exact_below) for c, s in zip(counts, sk, strict=True))
        )

    def merge(self, *others: RfmSketches) -> RfmSketches:
        parts = [o._sketches() for o in others]
        return RfmSketches(
            *(s.merge(*(p[i] for p in parts)) for i, s in enumerate(self._sketches()))
        )

    def to_record(self) -> list[Any]:
        """``[RECORD_VERSION, recency, frequency, monetary, rate, amount]`` (bin lists)."""
        return [RECORD_VERSION, *(s.to_record() for s in self._sketches())]

    @classmethod
    def from_record(cls, rec: Sequence[Any]) -> RfmSketches:
        if len(rec) != 6 or rec[0] != RECORD_VERSION:
            raise ValueError(f"not an RfmSketches record of version {RECORD_VERSION}")
        es = [s.exact_below for s in cls()._sketches()]
        return cls(*(Sketch.from_record(r, e) for r, e in zip(rec[1:], es, strict=True)))


# -- scores ------------------------------------------------------------------------------

QUINTILES = (Fraction(1, 5), Fraction(2, 5), Fraction(3, 5), Fraction(4, 5))
Thresholds = tuple[float, float, float, float]


def score(value: float, thresholds: Sequence[float]) -> int:
    """1..5: one plus the number of thresholds ``<= value`` (ascending thresholds).

    A value equal to a threshold gets the higher score. Higher value, higher score; for R
    the value is the last purchase day, so more recent scores higher."""
    return 1 + bisect_right(thresholds, float(value))


def _four(name: str, values: Iterable[float]) -> Thresholds:
    t = tuple(float(v) for v in values)
    if len(t) != 4 or any(math.isnan(v) for v in t) or list(t) != sorted(t):
        raise ValueError(f"{name}: four ascending thresholds expected, got {t!r}")
    return t


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Four ascending thresholds per axis: ``r`` over last purchase days, ``f`` over
    purchase days, ``m`` over net spend. ``population`` is the number of customers they
    were computed from (0 for fixed thresholds)."""

    r: Thresholds
    f: Thresholds
    m: Thresholds
    population: int = 0
    kind: str = "quantile"  # or "fixed"

    def __post_init__(self) -> None:
        for name in ("r", "f", "m"):
            object.__setattr__(self, name, _four(name, getattr(self, name)))

    @classmethod
    def fixed(
        cls,
        *,
        recency_days: Sequence[float],
        frequency: Sequence[float],
        monetary: Sequence[float],
        as_of_day: int,
    ) -> Cutoffs:
        """Configured thresholds instead of quintiles. ``recency_days`` are days since the
        last purchase, descending (e.g. 365, 180, 90, 30: at most 30 days scores 5, more
        than 365 scores 1), turned into last-purchase days as of ``as_of_day`` (stream
        time); ``frequency`` (purchase days) and ``monetary`` (net spend) ascending."""
        days = tuple(float(d) for d in recency_days)
        if list(days) != sorted(days, reverse=True):
            raise ValueError(f"recency_days: four descending values expected, got {days!r}")
        return cls(
            cast(Thresholds, tuple(as_of_day - d for d in days)),
            cast(Thresholds, frequency),
            cast(Thresholds, monetary),
            0,
            "fixed",
        )

    def scores(self, p: RfmPoint) -> tuple[int, int, int]:
        """(R, F, M) of a customer."""
        return (
            score(p.last_day, self.r),
            score(p.purchase_days, self.f),
            score(p.net_spend, self.m),
        )


def cutoffs_from(sketches: RfmSketches) -> Cutoffs:
    """Quintile cut-offs of the population: ``Sketch.cut`` at 20/40/60/80%.

    With these, a customer's score is 1 + the number of whole fifths of the population in
    strictly lower buckets (capped at 5): a tie group takes the score of its lowest member.
    Fewer than 5 customers still give scores 1..5 by the same rule (a lone customer scores
    1, of two the higher scores 3); an empty population has infinite cut-offs (score 1)."""

    def cuts(s: Sketch) -> Thresholds:
        return tuple(s.cut(q) for q in QUINTILES)  # type: ignore[return-value]

    return Cutoffs(
        cuts(sketches.recency),
        cuts(sketches.frequency),
        cuts(sketches.monetary),
        sketches.count,
        "quantile",
    )


# -- segments ----------------------------------------------------------------------------

SEGMENTS = (
    "champions",
    "loyal",
    "potential_loyalists",
    "new",
    "promising",
    "need_attention",
    "about_to_sleep",
    "at_risk",
    "cant_lose",
    "hibernating",
)

# The common R/F segment map, DEFAULT_SEGMENTS[r - 1][f - 1]: one row per R score (the
# first row is R = 1, the last R = 5), one column per F score (F = 1 first).
DEFAULT_SEGMENTS: tuple[tuple[str, ...], ...] = (
    # F=1            F=2                    F=3                    F=4          F=5
    ("hibernating",    "hibernating",         "at_risk",             "at_risk",   "cant_lose"),
    ("hibernating",    "hibernating",         "at_risk",             "at_risk",   "cant_lose"),
    ("about_to_sleep", "about_to_sleep",      "need_attention",      "loyal",     "loyal"),
    ("promising",      "potential_loyalists", "potential_loyalists", "loyal",     "loyal"),
    ("new",            "potential_loyalists", "potential_loyalists", "champions", "champions"),
)  # fmt: skip

SegmentMap = Sequence[Sequence[str]] | Mapping[tuple[int, int], str]


def segment(r: int, f: int, segment_map: SegmentMap = DEFAULT_SEGMENTS) -> str:
    """The segment of an (R, F) score pair. ``segment_map`` is 5x5: rows indexed by R - 1,
    columns by F - 1 (like DEFAULT_SEGMENTS), or a mapping keyed by ``(r, f)``."""
    if r not in range(1, 6) or f not in range(1, 6):
        raise ValueError(f"scores must be 1..5, got R={r!r} F={f!r}")
    if isinstance(segment_map, Mapping):
        return segment_map[(r, f)]
    return segment_map[r - 1][f - 1]


# -- the customer behaviour matrix -------------------------------------------------------

QUADRANTS = ("best", "frequent_low_spend", "rare_high_spend", "uncertain")


def behaviour_quadrant(
    purchase_days_per_year: float,
    avg_purchase: float,
    freq_threshold: float,
    amount_threshold: float,
) -> str:
    """Frequent when ``purchase_days_per_year >= freq_threshold``, high spend when
    ``avg_purchase >= amount_threshold``: best (both), frequent_low_spend,
    rare_high_spend, uncertain (neither). Inputs: ``RfmPoint.rate`` and ``.amount``;
    thresholds: ``medians_from`` or configured values."""
    frequent = purchase_days_per_year >= freq_threshold
    high = avg_purchase >= amount_threshold
    if frequent:
        return "best" if high else "frequent_low_spend"
    return "rare_high_spend" if high else "uncertain"


def medians_from(sketches: RfmSketches) -> tuple[float, float]:
    """Default ``(freq_threshold, amount_threshold)``: the median cuts of the population's
    rate and amount (``Sketch.cut(0.5)``), so a customer is frequent (high spend) when at
    least half of the customers are in strictly lower buckets. Empty: ``(inf, inf)``."""
    half = Fraction(1, 2)
    return sketches.rate.cut(half), sketches.amount.cut(half)


# -- flags -------------------------------------------------------------------------------

KEY_ACCOUNT_MIN_M_SCORE = 5  # the top 20% by net spend
KEY_ACCOUNT_MIN_TENURE_DAYS = 365  # a continuous relationship of a year or more
KEY_ACCOUNT_MIN_PURCHASE_DAYS = 4
TRANSACTION_BUYER_MIN_DAYS = 90  # a relationship buyer comes back within this


def is_key_account(
    m_score: int,
    tenure_days: int,
    purchase_days: int,
    in_decline: bool,
    *,
    min_m_score: int = KEY_ACCOUNT_MIN_M_SCORE,
    min_tenure_days: int = KEY_ACCOUNT_MIN_TENURE_DAYS,
    min_purchase_days: int = KEY_ACCOUNT_MIN_PURCHASE_DAYS,
) -> bool:
    """A key account: M score >= 5 (top 20% by net spend), tenure (days from the first
    purchase day to the as-of day) >= 365, at least 4 purchase days, and not in decline
    (``in_decline``: lifecycle stage decline or churned)."""
    return (
        m_score >= min_m_score
        and tenure_days >= min_tenure_days
        and purchase_days >= min_purchase_days
        and not in_decline
    )


def is_transaction_buyer(
    purchase_days: int,
    tenure_days: int,
    *,
    min_days: int = TRANSACTION_BUYER_MIN_DAYS,
) -> bool:
    """A one-off buyer: exactly one purchase day, at least 90 days ago (``tenure_days``,
    from the first purchase day to the as-of day). A relationship buyer comes back."""
    return purchase_days == 1 and tenure_days >= min_days
