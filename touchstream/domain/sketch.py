"""A mergeable quantile sketch: the population behind the RFM cut-offs (docs/scoring.md).

The quantile sketch (``Sketch``) is a histogram over buckets:

* exact buckets for integer values with ``|v| < exact_below`` (default 128: small counts
  such as purchase days are exact; ``DAY_EXACT_BELOW`` makes every day number exact);
* logarithmic buckets with relative accuracy ``RELATIVE_ACCURACY`` (1%) for everything
  else (DDSketch: bucket ``i = ceil(log|v| / log(gamma))``, ``gamma = (1 + a) / (1 - a)``,
  covering ``(gamma**(i-1), gamma**i]``). A sketch with ``exact_below > 1`` holds integers
  below it (a non-integer there is a ValueError); ``exact_below=REAL`` (1) is for real
  values: only 0 is exact and every other value gets 1% relative accuracy.
* Negative values (net spend after refunds) are mapped **symmetrically**: ``-v`` goes to
  the mirror of ``v``'s bucket, with the same accuracy. Nothing is clamped.

Bucket keys are integers ordered like the values they hold, so a sorted tuple of
``(key, count)`` is the whole sketch, its persistence form and a bucket-wise sum merges
sketches (associative and commutative).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# -- the sketch --------------------------------------------------------------------------

RELATIVE_ACCURACY = 0.01
GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
LOG_GAMMA = math.log(GAMMA)
_MID = 2 / (GAMMA + 1)  # a bucket's representative is _MID * its upper bound
EXACT_BELOW = 128  # integers 0..127 (and -127..-1) have their own bucket
DAY_EXACT_BELOW = 1 << 22  # every day number (days since 1970) has its own bucket
REAL = 1  # exact_below of real-valued sketches: only 0 is exact
MAX_MAGNITUDE = 1e300  # larger values (and NaN, infinities) are rejected
# Log keys are exact_below + LOG_OFFSET + i; i >= -37_222 for any positive float, so
# they never meet the exact keys.
LOG_OFFSET = 40_000

Bins = tuple[tuple[int, int], ...]
Delta = tuple[float | None, float | None]


def bucket_key(value: Any, e: int) -> int:
    x = float(value)
    a = -x if x < 0 else x
    if a < e:
        if a.is_integer():
            k = int(a)
            return -k if x < 0 else k
        if e > 1:
            raise ValueError(f"{value!r}: this sketch holds integers below {e}")
    elif not a <= MAX_MAGNITUDE:
        raise ValueError(f"{value!r}: not a finite value of magnitude <= {MAX_MAGNITUDE:g}")
    k = e + LOG_OFFSET + math.ceil(math.log(a) / LOG_GAMMA)
    return -k if x < 0 else k


def _order(v: float, e: int) -> float:
    """``bucket_key`` extended to every float (a non-integer below ``e`` sorts between its
    integers), for the searches of ``_settle``."""
    a = abs(v)
    if e > 1 and a < e and not a.is_integer():
        return math.copysign(math.floor(a) + 0.5, v)
    return bucket_key(v, e)


def _rep(k: int, e: int) -> float:
    """The value a bucket stands for: within RELATIVE_ACCURACY of any value in it."""
    a = -k if k < 0 else k
    if a < e:
        v = float(a)
    else:
        v = math.exp((a - e - LOG_OFFSET) * LOG_GAMMA) * _MID
        if e > 1:
            v = max(v, float(e))  # the bucket holds only values >= e: closer still
    return -v if k < 0 else v


def _settle(v: float, k: int, e: int) -> float:
    """The smallest float whose bucket is ``k`` or later, starting from a guess ``v``
    a few ulps away (log and exp round)."""
    while _order(v, e) < k:
        v = math.nextafter(v, math.inf)
    while _order(w := math.nextafter(v, -math.inf), e) >= k:
        v = w
    return v


def _bucket_start(k: int, e: int) -> float:
    """The smallest value that falls in bucket ``k`` (a bucket that can hold values)."""
    a = -k if k < 0 else k
    if a < e:
        return float(k)
    i = a - e - LOG_OFFSET
    if k > 0:
        v = math.exp((i - 1) * LOG_GAMMA)
        if e > 1:
            v = max(v, float(e))
    else:
        v = -math.exp(i * LOG_GAMMA)
    return _settle(v, k, e)


def _after_bucket(k: int, e: int) -> float:
    """The smallest value beyond bucket ``k``."""
    a = -k if k < 0 else k
    if a < e:
        return float(k + 1) if e > 1 else math.nextafter(float(k), math.inf)
    if k > 0:
        return _bucket_start(k + 1, e)
    v = -math.exp((a - e - LOG_OFFSET - 1) * LOG_GAMMA)  # -(its lower magnitude bound)
    if e > 1 and -v < e:
        return float(1 - e)  # the next possible value is the exact integer -(e - 1)
    return _settle(v, k + 1, e)


def _rank(q: float | Fraction, n: int) -> int:
    """ceil(q * n), exactly (0.2 * 5 is 1, not 1.0000000000000002)."""
    fq = q if isinstance(q, Fraction | int) else Fraction(str(float(q)))
    if not 0 <= fq <= 1:
        raise ValueError(f"quantile {q!r} is not in [0, 1]")
    return math.ceil(fq * n)


def move_count(counts: dict[int, int], e: int, old: Any, new: Any) -> None:
    ko = None if old is None else bucket_key(old, e)
    kn = None if new is None else ko if new == old else bucket_key(new, e)
    move_key(counts, ko, kn, old)


def move_key(counts: dict[int, int], ko: int | None, kn: int | None, value: Any = None) -> None:
    """One value leaves bucket ``ko`` and enters bucket ``kn`` (None: none)."""
    if ko is not None:
        c = counts.get(ko, 0)
        if c <= 0:
            what = f"bucket {ko}" if value is None else repr(value)
            raise ValueError(f"cannot remove {what}: not in the sketch")
        if ko == kn:
            return
        counts[ko] = c - 1
    if kn is not None:
        counts[kn] = counts.get(kn, 0) + 1


def freeze(counts: dict[int, int]) -> Bins:
    return tuple(sorted((k, c) for k, c in counts.items() if c))


@dataclass(frozen=True, slots=True)
class Sketch:
    """A mergeable quantile sketch: sorted ``(bucket key, count)`` pairs, no zero counts.

    Build it with ``Sketch()`` (or ``Sketch(exact_below=REAL)`` for real values) and
    ``apply``/``add``/``remove``; every method returns a new sketch.
    """

    bins: Bins = ()
    exact_below: int = EXACT_BELOW

    @property
    def count(self) -> int:
        return sum(c for _, c in self.bins)

    def bucket(self, value: float) -> int:
        """The key of the bucket ``value`` falls in (keys are ordered like values)."""
        return bucket_key(value, self.exact_below)

    def apply(self, deltas: Iterable[Delta]) -> Sketch:
        """Apply ``(old value or None, new value or None)`` changes in order, copying the
        sketch once for the whole batch. Removing a value that is not in the sketch
        raises ValueError (and nothing changes: sketches are immutable)."""
        e = self.exact_below
        counts = dict(self.bins)
        for old, new in deltas:
            move_count(counts, e, old, new)
        return Sketch(freeze(counts), e)

    def add(self, value: float) -> Sketch:
        return self.apply(((None, value),))

    def remove(self, value: float) -> Sketch:
        return self.apply(((value, None),))

    def merge(self, *others: Sketch) -> Sketch:
        """Bucket-wise sum (sketches of different partitions; same ``exact_below``)."""
        counts = dict(self.bins)
        for o in others:
            if o.exact_below != self.exact_below:
                raise ValueError("cannot merge sketches with different exact_below")
            for k, c in o.bins:
                counts[k] = counts.get(k, 0) + c
        return Sketch(freeze(counts), self.exact_below)

    def quantile(self, q: float | Fraction) -> float:
        """The lower empirical quantile: the value of rank ``max(ceil(q * n) - 1, 0)``
        (0-based, ascending), i.e. the smallest value with at least ``q * n`` values at or
        below it. Exact for exact buckets, else within 1% relative error. ValueError when
        empty."""
        n = self.count
        if n == 0:
            raise ValueError("quantile of an empty sketch")
        rank = max(_rank(q, n) - 1, 0)
        seen = 0
        for k, c in self.bins:
            seen += c
            if seen > rank:
                return _rep(k, self.exact_below)
        raise AssertionError("unreachable")

    def cut(self, q: float | Fraction) -> float:
        """The score threshold for ``q`` (0 < q <= 1): the smallest value that has at least
        ``ceil(q * n)`` of the population in strictly lower buckets. A value ``>=`` the cut
        is above the lower ``q`` share. When no bucket qualifies (a tie group at the top
        holds more than ``1 - q`` of the population) the cut is just above the largest
        bucket, so no current member reaches it; for an empty sketch it is ``inf``."""
        n = self.count
        if n == 0:
            return math.inf
        need = _rank(q, n)
        if need == 0:
            raise ValueError("cut needs q > 0")
        bins, e = self.bins, self.exact_below
        seen = 0
        for i, (k, c) in enumerate(bins):
            seen += c
            if seen >= need:
                if i + 1 < len(bins):
                    return _bucket_start(bins[i + 1][0], e)
                return _after_bucket(k, e)
        raise AssertionError("unreachable")

    def to_record(self) -> list[list[int]]:
        """Sorted ``[bucket, count]`` pairs (JSON-able); ``exact_below`` is not included."""
        return [[k, c] for k, c in self.bins]

    @classmethod
    def from_record(cls, rec: Sequence[Sequence[int]], exact_below: int = EXACT_BELOW) -> Sketch:
        bins = tuple((k, c) for k, c in rec)
        for i, (k, c) in enumerate(bins):
            if not (type(k) is int and type(c) is int and c > 0):
                raise ValueError(f"bad sketch bin {[k, c]!r}")
            if i and bins[i - 1][0] >= k:
                raise ValueError("sketch bins are not strictly increasing")
        return cls(bins, exact_below)
