"""The lifecycle state machine (touchstream/domain/lifecycle.py) through update.step/advance."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Account, Complaint, Purchase, epoch_ms
from tests.steps import advance, step
from touchstream.domain import lifecycle
from touchstream.domain.alerts import Alert
from touchstream.domain.customer import CustomerState
from touchstream.domain.lifecycle import (
    CHURNED,
    DECLINE,
    EXPLORATION,
    FORMATION,
    STABILITY,
    Rules,
    Transition,
    typical_gap_days,
)
from touchstream.domain.units import DAY_MS

BASE = datetime(2024, 1, 1, tzinfo=UTC)
BASE_DAY = epoch_ms(BASE) // DAY_MS
CID = "c"
_ids = itertools.count()


def at(day: float, hour: int = 12) -> datetime:
    return BASE + timedelta(days=day, hours=hour)


def ms(day: float, hour: int = 12) -> int:
    return epoch_ms(at(day, hour))


def purchase(day: float, amount: str | int = "30", hour: int = 12) -> Purchase:
    return Purchase(
        event_id=f"p{next(_ids)}",
        customer_id=CID,
        type="purchase",
        occurred_at=at(day, hour),
        amount=Decimal(str(amount)),
        currency="USD",
    )


def closed(day: float) -> Account:
    return Account(
        event_id=f"a{next(_ids)}",
        customer_id=CID,
        type="account",
        occurred_at=at(day),
        change="closed",
    )


def run(events, rules: Rules = lifecycle.DEFAULT_RULES, state: CustomerState | None = None):
    """Fold events through step; return the final state and every output."""
    outs: list = []
    for e in events:
        state, o = step(state, e, rules)
        outs.extend(o)
    return state, outs


def transitions(outs) -> list[Transition]:
    return [o for o in outs if isinstance(o, Transition)]


def alerts(outs) -> list[Alert]:
    return [o for o in outs if isinstance(o, Alert)]


def moves(outs) -> list[tuple[str | None, str]]:
    return [(t.from_stage, t.to_stage) for t in transitions(outs)]


# -- upward moves ---------------------------------------------------------------------


def test_first_purchase_starts_exploration_with_relationship_1_and_seq_0():
    s, outs = run([purchase(0)])
    (tr,) = transitions(outs)
    assert (tr.from_stage, tr.to_stage) == (None, EXPLORATION)
    assert tr.relationship == 1
    assert tr.seq == 0
    assert tr.at_ms == ms(0)
    assert tr.reason == "first purchase"
    assert s.stage == EXPLORATION and s.relationships == 1 and s.transitions == 1


def test_second_purchase_day_moves_exploration_to_formation():
    s, outs = run([purchase(0), purchase(5)])
    assert moves(outs) == [(None, EXPLORATION), (EXPLORATION, FORMATION)]
    tr = transitions(outs)[-1]
    assert tr.seq == 1 and tr.at_ms == ms(5)
    assert s.stage == FORMATION and s.stage_since_ms == ms(5)


def test_two_purchases_on_the_same_day_do_not_promote():
    s, outs = run([purchase(0, hour=9), purchase(0, hour=20)])
    assert s.stage == EXPLORATION
    assert moves(outs) == [(None, EXPLORATION)]


def test_stability_is_reached_with_four_purchase_days_and_ninety_days_tenure():
    s, outs = run([purchase(0), purchase(30), purchase(60), purchase(90)])
    assert s.stage == STABILITY
    assert moves(outs)[-1] == (FORMATION, STABILITY)
    assert transitions(outs)[-1].at_ms == ms(90)


def test_stability_is_not_reached_with_ninety_days_tenure_but_only_three_purchase_days():
    s, _ = run([purchase(0), purchase(60), purchase(120)])
    assert s.stage == FORMATION


def test_stability_is_not_reached_with_four_purchase_days_inside_ninety_days():
    s, _ = run([purchase(0), purchase(20), purchase(40), purchase(60), purchase(80)])
    assert s.stage == FORMATION


def test_stability_waits_for_the_first_purchase_once_the_tenure_is_reached():
    s, outs = run(
        [purchase(0), purchase(20), purchase(40), purchase(60), purchase(85), purchase(100)]
    )
    assert s.stage == STABILITY
    assert transitions(outs)[-1].at_ms == ms(100)


def test_a_collapsing_spend_blocks_stability():
    # latest 3 purchase days average 10, the earlier one 300: trend 0.03 < 0.5
    s, _ = run([purchase(0, 300), purchase(10, 10), purchase(20, 10), purchase(91, 10)])
    assert s.stage == FORMATION


def test_a_steady_spend_with_the_same_days_reaches_stability():
    # latest 3 average 10, the earlier one 15: trend 0.67 >= 0.5
    s, _ = run([purchase(0, 15), purchase(10, 10), purchase(20, 10), purchase(91, 10)])
    assert s.stage == STABILITY


def test_a_spend_trend_exactly_at_the_threshold_is_enough():
    s, _ = run([purchase(0, 20), purchase(10, 10), purchase(20, 10), purchase(91, 10)])
    assert s.stage == STABILITY


def test_promotion_never_skips_formation_even_when_stability_rules_hold():
    assert lifecycle.promotion(EXPLORATION, (0, 30, 60, 90), 0, 91 * DAY_MS, ()) == (
        FORMATION,
        "repeat purchase: 4 purchase days",
    )


purchase_plans = st.lists(
    st.tuples(st.integers(0, 1500), st.integers(1, 500)), min_size=1, max_size=25
)


@settings(max_examples=50, deadline=None)
@given(purchase_plans, st.booleans())
def test_no_stage_is_ever_skipped_on_the_way_up(plan, in_order):
    if in_order:
        plan = sorted(plan)
    _, outs = run([purchase(d, a) for d, a in plan])
    declined_from = None
    for t in transitions(outs):
        if t.from_stage in (None, CHURNED):
            assert t.to_stage == EXPLORATION
        elif t.from_stage == DECLINE and t.to_stage != CHURNED:
            assert t.to_stage == declined_from  # recovery goes back, never higher
        elif t.to_stage in lifecycle.ACTIVE:
            assert lifecycle.LEVEL[t.to_stage] == lifecycle.LEVEL[t.from_stage] + 1
        if t.to_stage == DECLINE:
            declined_from = t.from_stage
    ups = [
        t.to_stage
        for t in transitions(outs)
        if t.to_stage in lifecycle.ACTIVE and t.from_stage != DECLINE
    ]
    # each relationship climbs exploration -> formation -> stability in that order
    climb = "".join(s[0] for s in ups)  # e, f, s
    for part in climb.split("e")[1:]:
        assert part in ("", "f", "fs")
    assert climb == "" or climb[0] == "e"


@settings(max_examples=50, deadline=None)
@given(purchase_plans)
def test_transition_sequence_numbers_count_up_from_zero(plan):
    s, outs = run([purchase(d, a) for d, a in plan])
    assert [t.seq for t in transitions(outs)] == list(range(len(transitions(outs))))
    assert s.transitions == len(transitions(outs))


# -- silence: decline and churn -------------------------------------------------------


def every(gap: int, gaps: int = 9) -> tuple[int, ...]:
    """Purchase days with ``gaps`` equal gaps: enough for the customer's own rhythm."""
    return tuple(range(0, gap * gaps + 1, gap))


@pytest.mark.parametrize(
    ("days", "decline_days"),
    [
        ((0,), 90),  # one-day customer: default gap 30 -> 90
        (every(5), 30),  # 3 x 5 = 15 -> clamped up to 30
        (every(20), 60),  # 3 x 20
        (every(70), 180),  # 3 x 70 = 210 -> clamped down to 180
    ],
)
def test_decline_fires_after_clamped_three_typical_gaps_dated_at_the_deadline(days, decline_days):
    s, _ = run([purchase(d) for d in days])
    deadline = ms(days[-1]) + decline_days * DAY_MS
    assert s.next_deadline_ms == deadline
    quiet, outs = advance(s, deadline - 1)
    assert outs == () and quiet.stage == s.stage
    later = deadline + 50 * DAY_MS // 10  # noticed 5 days later
    s2, outs = advance(s, later)
    (tr,) = transitions(outs)
    assert (tr.from_stage, tr.to_stage) == (s.stage, DECLINE)
    assert tr.at_ms == deadline  # the deadline, not the moment it was noticed
    assert s2.stage == DECLINE and s2.stage_since_ms == deadline
    assert s2.declined_from == s.stage


def test_decline_fires_exactly_at_the_deadline_millisecond():
    s, _ = run([purchase(d) for d in every(20)])
    s2, outs = advance(s, s.next_deadline_ms)
    assert s2.stage == DECLINE
    assert transitions(outs)[0].at_ms == ms(180) + 60 * DAY_MS


@pytest.mark.parametrize(
    ("days", "churn_days"),
    [
        ((0,), 180),  # 6 x 30 default
        (every(10), 90),  # 6 x 10 = 60 -> clamped up to 90
        (every(20), 120),  # 6 x 20
        (every(70), 365),  # 6 x 70 = 420 -> clamped down to 365
    ],
)
def test_churned_follows_after_clamped_six_typical_gaps_of_silence(days, churn_days):
    s, _ = run([purchase(d) for d in days])
    s, _ = advance(s, s.next_deadline_ms)
    assert s.stage == DECLINE
    churn_at = ms(days[-1]) + churn_days * DAY_MS
    assert s.next_deadline_ms == churn_at
    s_before, outs = advance(s, churn_at - 1)
    assert s_before.stage == DECLINE and outs == ()
    s2, outs = advance(s, churn_at + 400 * DAY_MS)
    (tr,) = transitions(outs)
    assert (tr.from_stage, tr.to_stage, tr.at_ms) == (DECLINE, CHURNED, churn_at)
    assert s2.stage == CHURNED
    assert s2.next_deadline_ms is None


def test_one_advance_far_ahead_fires_decline_and_churned_in_order():
    s, _ = run([purchase(0), purchase(20), purchase(40)])
    s2, outs = advance(s, ms(2000))
    assert moves(outs) == [(FORMATION, DECLINE), (DECLINE, CHURNED)]
    # two gaps of 20, shrunk towards the default gap (the early rhythm)
    days = (BASE_DAY, BASE_DAY + 20, BASE_DAY + 40)
    assert [t.at_ms for t in transitions(outs)] == [
        ms(40 + lifecycle.decline_after_days(days)),
        ms(40 + lifecycle.churn_after_days(days)),
    ]
    assert s2.stage == CHURNED


@pytest.mark.parametrize(
    ("days", "stage", "pattern"),
    [
        ((0,), EXPLORATION, "early_abortion"),
        ((0, 20, 40), FORMATION, "mid_way_death"),
        ((0, 30, 60, 90), STABILITY, "premature_exit"),
    ],
)
def test_the_exit_pattern_is_named_by_the_stage_declined_from(days, stage, pattern):
    s, _ = run([purchase(d) for d in days])
    assert s.stage == stage
    s2, outs = advance(s, ms(5000))
    churn = [t for t in transitions(outs) if t.to_stage == CHURNED]
    assert len(churn) == 1
    assert churn[0].pattern == pattern
    assert s2.exit_pattern == pattern
    assert all(t.pattern is None for t in transitions(outs) if t.to_stage != CHURNED)


@pytest.mark.parametrize(
    ("days", "stage"),
    [((0,), EXPLORATION), ((0, 20, 40), FORMATION), ((0, 30, 60, 90), STABILITY)],
)
def test_a_purchase_in_decline_recovers_to_the_stage_it_fell_from(days, stage):
    s, _ = run([purchase(d) for d in days])
    s, _ = advance(s, s.next_deadline_ms)
    assert s.stage == DECLINE
    back_day = (s.stage_since_ms - ms(0)) / DAY_MS + 1
    s2, outs = step(s, purchase(back_day))
    tr = transitions(outs)[0]
    assert (tr.from_stage, tr.reason) == (DECLINE, "purchase after decline")
    assert tr.to_stage == stage
    assert tr.at_ms == ms(back_day)
    assert s2.declined_from is None
    assert s2.relationships == 1


def test_a_purchase_after_churn_is_a_reactivation_with_a_new_relationship():
    s, _ = run([purchase(0), purchase(20), purchase(40)])
    s, _ = advance(s, ms(1000))
    assert s.stage == CHURNED
    s2, outs = step(s, purchase(1000))
    (tr,) = transitions(outs)
    assert (tr.from_stage, tr.to_stage, tr.reason) == (CHURNED, EXPLORATION, "reactivation")
    assert tr.relationship == 2
    assert s2.relationships == 2
    assert s2.stage == EXPLORATION
    assert s2.exit_pattern == "mid_way_death"  # kept after the reactivation
    assert [a.kind for a in alerts(outs)] == ["recovered"]
    assert alerts(outs)[0].previous_stage == CHURNED


def test_the_rhythm_of_a_reactivated_customer_counts_only_the_new_relationship():
    # old rhythm: 10-day gaps; new relationship: one day -> the one-day decline of 90 days
    s, _ = run([purchase(0), purchase(10), purchase(20)])
    s, _ = advance(s, ms(1000))
    s, _ = step(s, purchase(1000))
    assert s.next_deadline_ms == ms(1000) + 90 * DAY_MS
    s, outs = step(s, purchase(1005))
    assert moves(outs) == [(EXPLORATION, FORMATION)]


def test_an_account_closed_event_moves_an_active_customer_to_decline_at_once():
    s, _ = run([purchase(0), purchase(20), purchase(40)])
    s2, outs = step(s, closed(45))
    (tr,) = transitions(outs)
    assert (tr.from_stage, tr.to_stage, tr.reason) == (FORMATION, DECLINE, "account closed")
    assert tr.at_ms == ms(45)
    assert s2.stage == DECLINE and s2.declined_from == FORMATION
    # the churn limit still counts from the last purchase
    days = (BASE_DAY, BASE_DAY + 20, BASE_DAY + 40)
    assert s2.next_deadline_ms == ms(40 + lifecycle.churn_after_days(days))


def test_an_account_closed_event_without_any_purchase_moves_nothing():
    s, outs = run([closed(3)])
    assert s.stage is None and transitions(outs) == []


def test_a_late_purchase_older_than_the_last_purchase_does_not_move_the_stage():
    s, _ = run([purchase(10)])
    s2, outs = step(s, purchase(5))
    assert s2.stage == EXPLORATION
    assert transitions(outs) == []
    assert s2.purchases == 2 and s2.purchase_days == (BASE_DAY + 5, BASE_DAY + 10)


def test_a_late_purchase_does_not_recover_a_declined_customer():
    s, _ = run([purchase(0), purchase(20), purchase(40)])
    s, _ = advance(s, s.next_deadline_ms)
    s2, outs = step(s, purchase(30))
    assert s2.stage == DECLINE
    assert transitions(outs) == [] and alerts(outs) == []


def test_advance_with_an_earlier_now_does_nothing():
    s, _ = run([purchase(0), purchase(20), purchase(40)])
    s2, outs = advance(s, ms(39))
    assert outs == ()
    assert s2 == s


def test_advance_without_any_purchase_does_nothing():
    s, _ = run(
        [
            Complaint(
                event_id="k",
                customer_id=CID,
                type="complaint",
                occurred_at=at(0),
                complaint_id="k1",
                category="price",
                severity=2,
                status="resolved",
            )
        ]
    )
    assert s.next_deadline_ms is None
    s2, outs = advance(s, ms(10_000))
    assert outs == () and s2 == s


@settings(max_examples=50, deadline=None)
@given(purchase_plans, st.integers(0, 2500), st.integers(0, 2500))
def test_advancing_in_two_steps_equals_advancing_once_to_the_later_time(plan, a, b):
    now1, now2 = sorted((ms(a), ms(b)))
    s, _ = run([purchase(d, amt) for d, amt in plan])
    s1, o1 = advance(s, now1)
    s12, o2 = advance(s1, now2)
    s_once, o = advance(s, now2)
    assert s12 == s_once
    assert o1 + o2 == o


events_plans = st.lists(
    st.tuples(st.sampled_from(["purchase", "closed"]), st.integers(0, 1500), st.integers(1, 300)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=50, deadline=None)
@given(events_plans, st.integers(0, 3000))
def test_next_deadline_is_never_earlier_than_the_stage_start(plan, now_day):
    evs = [purchase(d, a) if k == "purchase" else closed(d) for k, d, a in plan]
    state = None
    for e in evs:
        state, _ = step(state, e)
        if state.next_deadline_ms is not None:
            assert state.next_deadline_ms >= state.stage_since_ms
    state, outs = advance(state, ms(now_day))
    if state.next_deadline_ms is not None:
        assert state.next_deadline_ms >= state.stage_since_ms
    assert all(t.at_ms <= ms(now_day) for t in transitions(outs))


# -- rhythm and rules -----------------------------------------------------------------


PLAIN = Rules(rhythm_min_gaps=0, rhythm_longest_share=0.0)  # the median alone


def test_typical_gap_is_the_median_of_the_gaps():
    assert typical_gap_days((0, 1, 2, 100), PLAIN) == 1.0
    assert typical_gap_days((0, 10, 30), PLAIN) == 15.0
    assert typical_gap_days(every(10)) == 10.0


def test_the_typical_gap_is_at_least_three_quarters_of_the_longest_recent_gap():
    days = (*range(9), 48)  # eight gaps of 1 day, one of 40
    assert typical_gap_days(days) == 0.75 * 40


def test_typical_gap_uses_only_the_latest_gaps_of_its_window():
    days = (0, 100, 200, 300, 400, 500, 505, 510, 515, 520)  # 5 gaps of 100, 4 of 5
    assert (
        typical_gap_days(days, Rules(rhythm_window=8, rhythm_min_gaps=0, rhythm_longest_share=0.0))
        == 52.5
    )
    assert (
        typical_gap_days(days, Rules(rhythm_window=4, rhythm_min_gaps=0, rhythm_longest_share=0.0))
        == 5.0
    )


def test_an_early_rhythm_leans_on_the_default_gap_until_enough_gaps_are_seen():
    k, default = lifecycle.DEFAULT_RULES.rhythm_prior_gaps, lifecycle.DEFAULT_RULES.default_gap_days
    assert lifecycle.DEFAULT_RULES.rhythm_min_gaps == 8
    assert typical_gap_days((0, 3)) == pytest.approx((3 + k * default) / (1 + k))
    assert typical_gap_days((0, 3, 6, 9)) == pytest.approx((3 * 3 + k * default) / (3 + k))
    assert typical_gap_days(every(3, 8)) == 3.0  # eight gaps: the customer's own


def test_one_ordinary_long_gap_early_on_does_not_look_like_a_decline():
    # Three quick purchases, then a month away: the plain median (3 days) would have
    # declared a decline after 30 days.
    s, outs = run([purchase(0), purchase(3), purchase(6), purchase(40)])
    assert all(t.to_stage != DECLINE for t in transitions(outs))
    assert s.stage == FORMATION


def test_an_irregular_buyer_is_measured_against_its_longest_recent_pause():
    days = (0, 5, 10, 15, 20, 25, 30, 35, 40, 100, 105)  # a pause of 60 days among gaps of 5
    assert typical_gap_days(days) == 45.0
    s, _ = run([purchase(d) for d in days])
    assert s.next_deadline_ms == ms(105) + 135 * DAY_MS  # 3 x 45, not the minimum 30


def test_a_one_day_customer_has_the_default_typical_gap():
    assert typical_gap_days((7,)) == 30.0
    assert typical_gap_days(()) == 30.0
    assert typical_gap_days((7,), Rules(default_gap_days=12)) == 12.0


def test_custom_rules_change_the_formation_threshold():
    rules = Rules(formation_min_purchase_days=3)
    s, _ = run([purchase(0), purchase(5)], rules)
    assert s.stage == EXPLORATION
    s, _ = step(s, purchase(10), rules)
    assert s.stage == FORMATION


def test_custom_rules_change_the_stability_thresholds():
    rules = Rules(stability_min_purchase_days=3, stability_min_tenure_days=30)
    s, _ = run([purchase(0), purchase(15), purchase(31)], rules)
    assert s.stage == STABILITY
    s_default, _ = run([purchase(0), purchase(15), purchase(31)])
    assert s_default.stage == FORMATION


def test_custom_rules_change_the_silence_limits():
    rules = Rules(
        decline_factor=2, decline_min_days=5, churn_factor=4, churn_min_days=10, rhythm_min_gaps=0
    )
    s, _ = run([purchase(0), purchase(10), purchase(20)], rules)
    assert s.next_deadline_ms == ms(20) + 20 * DAY_MS
    s, outs = advance(s, ms(1000), rules)
    assert [t.at_ms for t in transitions(outs)] == [ms(40), ms(60)]


def test_custom_rules_change_the_spend_trend_threshold():
    plan = [purchase(0, 15), purchase(10, 10), purchase(20, 10), purchase(91, 10)]
    s, _ = run(plan, Rules(stability_min_spend_trend=0.9))
    assert s.stage == FORMATION


def test_deadline_is_none_for_a_churned_customer_or_without_purchases():
    one = lifecycle.typical_gap_days((0,))
    assert lifecycle.deadline_ms(CHURNED, 0, lifecycle.typical_gap_days((0, 10))) is None
    assert lifecycle.deadline_ms(None, None, one) is None
    assert lifecycle.deadline_ms(EXPLORATION, 0, one) == 90 * DAY_MS
    assert lifecycle.deadline_ms(DECLINE, 0, one) == 180 * DAY_MS


def test_a_reactivated_relationship_reaches_stability_on_its_own_spend():
    s, _ = run([purchase(0, 1000), purchase(10, 1000), purchase(20, 1000)])
    s, _ = advance(s, ms(1000))
    assert s.stage == CHURNED
    # the same steady plan that makes a first relationship stable at day 91
    s, _ = run(
        [purchase(1000, 100), purchase(1030, 100), purchase(1060, 100), purchase(1091, 100)],
        state=s,
    )
    fresh, _ = run([purchase(0, 100), purchase(30, 100), purchase(60, 100), purchase(91, 100)])
    assert fresh.stage == STABILITY
    assert s.stage == STABILITY
