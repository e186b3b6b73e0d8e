"""The customer lifecycle as a state machine (domain.md, seeds 000 and 001). Pure.

Stages: exploration -> formation -> stability (never skipped on the way up), decline from
any of the three, churned from decline. A declining customer who buys again recovers to
the stage it fell from; a churned customer who buys again starts a new relationship
(a reactivation, counted). docs/lifecycle.md states every rule with its numbers.

Silence is a signal: a customer who stops buying sends no events, so each state carries
its next deadline (``next_deadline_ms``) and ``update.advance_working`` fires what is due.
Transition times are the deadlines themselves, never the moment they were noticed, so a
replay decides exactly as live traffic did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from operator import sub

from touchstream.domain.units import DAY_MS

EXPLORATION = "exploration"
FORMATION = "formation"
STABILITY = "stability"
DECLINE = "decline"
CHURNED = "churned"
ACTIVE = (EXPLORATION, FORMATION, STABILITY)
LEVEL = {EXPLORATION: 1, FORMATION: 2, STABILITY: 3}

# The lifecycle pattern of a relationship that ended, by the stage it declined from.
EXIT_PATTERN = {
    EXPLORATION: "early_abortion",
    FORMATION: "mid_way_death",
    STABILITY: "premature_exit",
}


@dataclass(frozen=True, slots=True)
class Rules:
    """Every threshold of the state machine; the defaults are documented in
    docs/lifecycle.md. Gaps and tenures are in days; rhythm is the customer's own."""

    formation_min_purchase_days: int = 2
    stability_min_purchase_days: int = 4
    stability_min_tenure_days: int = 90
    # Spend trend: to reach stability, the mean spend of the latest 3 purchase days must be
    # at least this share of the mean of the earlier recorded ones (a relationship that
    # is shrinking is not stable yet).
    stability_min_spend_trend: float = 0.5
    # Rhythm: the typical gap is the median of the latest gaps between purchase days;
    # one-day customers (exploration) are measured against default_gap_days.
    rhythm_window: int = 12
    default_gap_days: float = 30.0
    # Early rhythm: with fewer than rhythm_min_gaps gaps, the median of one to three gaps
    # says little (one ordinary long gap would look like a decline), so it is shrunk
    # towards default_gap_days, as if rhythm_prior_gaps gaps of that length were seen.
    rhythm_min_gaps: int = 8
    rhythm_prior_gaps: int = 4
    # Irregular buyers: the gap the limits are measured in is at least this share of
    # the longest of the latest gaps, so a customer whose rhythm is uneven is not
    # declared declining by a pause it has made before.
    rhythm_longest_share: float = 0.75
    decline_factor: float = 3.0
    decline_min_days: float = 30.0
    decline_max_days: float = 180.0
    churn_factor: float = 6.0
    churn_min_days: float = 90.0
    churn_max_days: float = 365.0
    # Events may arrive this much out of order (the shell fires deadlines only when its
    # stream time passed them by this much); a customer's own event fires its deadlines
    # with the same allowance, so both ways decide alike.
    allowed_lateness_ms: int = 3_600_000
    # Complaints: resolved within this many days is "resolved quickly" (a loyalty signal,
    # domain.md); a complaint or a call problem still open after unresolved_after_days is
    # live trouble that can raise churn_risk.
    quick_resolution_days: float = 3.0
    unresolved_after_days: float = 7.0


DEFAULT_RULES = Rules()


@dataclass(frozen=True, slots=True)
class Transition:
    customer_id: str
    at_ms: int
    from_stage: str | None
    to_stage: str
    reason: str
    relationship: int  # 1 for the first relationship, +1 per reactivation
    seq: int  # this customer's transition number: the natural key with customer_id
    pattern: str | None = None  # set when the relationship ends (to churned)


def typical_gap_days(purchase_days: Sequence[int], rules: Rules = DEFAULT_RULES) -> float:
    days = purchase_days[-(rules.rhythm_window + 1) :]
    n = len(days) - 1
    if n < 1:
        return rules.default_gap_days
    gaps = sorted(map(sub, days[1:], days[:-1]))
    # statistics.median, without its overhead: the middle gap, or the mean of the two
    median = float(gaps[n // 2] if n % 2 else (gaps[n // 2 - 1] + gaps[n // 2]) / 2)
    if n < rules.rhythm_min_gaps:
        k = rules.rhythm_prior_gaps
        median = (n * median + k * rules.default_gap_days) / (n + k)
    return max(median, rules.rhythm_longest_share * gaps[-1])


def _clamp(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def decline_after_days(purchase_days: Sequence[int], rules: Rules = DEFAULT_RULES) -> float:
    g = typical_gap_days(purchase_days, rules)
    return _clamp(rules.decline_factor * g, rules.decline_min_days, rules.decline_max_days)


def churn_after_days(purchase_days: Sequence[int], rules: Rules = DEFAULT_RULES) -> float:
    g = typical_gap_days(purchase_days, rules)
    return _clamp(rules.churn_factor * g, rules.churn_min_days, rules.churn_max_days)


def silence_days(stage: str, typical_gap: float, rules: Rules = DEFAULT_RULES) -> float:
    """How many days without a purchase move an active (or declining) customer on, for
    a customer with this typical gap (``typical_gap_days``)."""
    if stage == DECLINE:
        return _clamp(rules.churn_factor * typical_gap, rules.churn_min_days, rules.churn_max_days)
    return _clamp(
        rules.decline_factor * typical_gap, rules.decline_min_days, rules.decline_max_days
    )


def deadline_ms(
    stage: str | None,
    last_purchase_ms: int | None,
    gap_days: float,
    rules: Rules = DEFAULT_RULES,
) -> int | None:
    """When silence next changes this customer's stage (None: nothing pending).
    ``gap_days``: the customer's ``typical_gap_days``."""
    if last_purchase_ms is None or stage is None or stage == CHURNED:
        return None
    return last_purchase_ms + int(silence_days(stage, gap_days, rules) * DAY_MS)


def promotion(
    stage: str,
    purchase_days: Sequence[int],
    first_purchase_ms: int,
    now_ms: int,
    recent_spend: tuple[tuple[int, float], ...],
    rules: Rules = DEFAULT_RULES,
) -> tuple[str, str] | None:
    """The next stage up and why, or None. One stage at a time: never skipped."""
    n = len(purchase_days)
    if stage == EXPLORATION and n >= rules.formation_min_purchase_days:
        return FORMATION, f"repeat purchase: {n} purchase days"
    if stage == FORMATION and n >= rules.stability_min_purchase_days:
        tenure = (now_ms - first_purchase_ms) / DAY_MS
        if tenure < rules.stability_min_tenure_days:
            return None
        spends = [s for _, s in recent_spend]
        if len(spends) > 3:
            latest, earlier = spends[-3:], spends[:-3]
            trend = (sum(latest) / 3) / max(sum(earlier) / len(earlier), 1e-9)
            if trend < rules.stability_min_spend_trend:
                return None
        return STABILITY, f"{n} purchase days over {tenure:.0f} days, steady spend"
    return None
