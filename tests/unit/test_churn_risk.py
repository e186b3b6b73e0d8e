"""Complaints followed to their outcome (touchstream/domain/issues.py) and churn_risk on
live, unresolved trouble only (defection.risk, update._check_risk), through update.step/advance."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Call, Complaint, Purchase, Survey, epoch_ms
from tests.steps import advance, step, step_many
from touchstream.domain import issues
from touchstream.domain.lifecycle import Rules
from touchstream.domain.units import DAY_MS

# One customer's days from 2024-01-01 at noon, and folding its events through step.
from .test_alerts import alerts, common, kinds, ms, run


def purchase(day: float) -> Purchase:
    return Purchase(type="purchase", amount=Decimal("30"), currency="USD", **common(day))


def complaint(day: float, cid="k1", status="open", category="service", severity=5) -> Complaint:
    return Complaint(
        type="complaint",
        complaint_id=cid,
        category=category,
        severity=severity,
        status=status,
        **common(day),
    )


def call(day: float, reason="service", resolved=False, wait_s=0) -> Call:
    return Call(
        type="call",
        direction="inbound",
        reason=reason,
        duration_s=100,
        wait_s=wait_s,
        resolved=resolved,
        **common(day),
    )


def survey(day: float, level="very_dissatisfied") -> Survey:
    return Survey(type="survey", satisfaction=level, **common(day))


def regular(days=(0, 10, 20, 30, 40)):
    return [purchase(d) for d in days]


# -- the complaint lifecycle -----------------------------------------------------------


def test_a_complaint_is_followed_by_its_id_from_open_to_resolved():
    s, _ = run([*regular(), complaint(45), complaint(45.25, status="resolved")])
    (c,) = s.complaints
    assert c.opened_ms == ms(45) and c.closed_ms == ms(45.25)
    assert c.status == issues.RESOLVED and not c.reopened
    assert issues.outcome(s.complaints, 3) == "resolved_quickly"


def test_the_complaint_record_is_the_same_whatever_order_its_reports_arrive_in():
    reports = [
        complaint(45),
        complaint(50, status="resolved"),
        complaint(60),
        complaint(61, status="rejected"),
    ]
    for order in itertools.permutations(reports):
        s, _ = run([*regular(), *order])
        (c,) = s.complaints
        assert [st for _, st in c.reports] == [
            issues.OPEN,
            issues.RESOLVED,
            issues.OPEN,
            issues.REJECTED,
        ]
        assert c.reopened and c.status == issues.REJECTED
        assert c.status_at(ms(55)) == issues.RESOLVED and c.status_at(ms(60)) == issues.OPEN


def test_the_outcome_names_the_latest_complaint():
    quick, slow = 3, 3
    s, _ = run([*regular()])
    assert issues.outcome(s.complaints, quick) == "none"
    s, _ = run([complaint(41, "a"), complaint(49, "a", status="resolved")], s)
    assert issues.outcome(s.complaints, slow) == "resolved"  # 8 days: not quickly
    s, _ = run([complaint(50, "b")], s)
    assert issues.outcome(s.complaints, quick) == "unresolved"
    s, _ = run([complaint(51, "b", status="rejected")], s)
    assert issues.outcome(s.complaints, quick) == "unresolved"


def test_quickly_is_configurable():
    s, _ = run([*regular(), complaint(45), complaint(49, status="resolved")])
    assert issues.outcome(s.complaints, 3) == "resolved"
    assert issues.outcome(s.complaints, 5) == "resolved_quickly"


# -- churn risk on live trouble only ---------------------------------------------------


def test_a_complaint_opened_and_resolved_hours_later_raises_no_alarm():
    s, outs = run([*regular(), complaint(45), complaint(45.2, status="resolved"), purchase(50)])
    s, later = advance(s, ms(55))
    assert kinds(outs + list(later)) == []
    assert s.alert_level == 0


def test_a_severe_complaint_left_open_for_a_week_raises_churn_risk_dated_then():
    s, outs = run([*regular(), complaint(45)])
    assert kinds(outs) == []  # not at once: it may be handled
    s, outs = advance(s, ms(52) - 1)
    assert kinds(outs) == []
    s, outs = advance(s, ms(60))
    (a,) = alerts(outs)
    assert (a.kind, a.at_ms, a.episode) == ("churn_risk", ms(52), 1)
    assert a.open_issues == ("2024-02-15 complaint:service:5 open 7 days",)
    assert a.defection_type == "service"
    assert "complaint:service:5 open 7 days" in a.message


def test_a_complaint_resolved_within_the_week_never_raises_churn_risk():
    s, _ = run([*regular(), complaint(45), complaint(51, status="resolved")])
    s, outs = advance(s, ms(60))
    assert kinds(outs) == []


def test_a_rejected_complaint_is_live_trouble_at_once():
    s, _ = run([*regular(), complaint(45, status="rejected")])
    s, outs = advance(s, ms(45) + 1)
    (a,) = alerts(outs)
    assert a.at_ms == ms(45) and a.open_issues == ("2024-02-15 complaint:service:5 rejected",)


def test_a_mild_open_complaint_alone_is_not_enough():
    s, _ = run([*regular(), complaint(45, severity=1)])  # 1.4 + 1.0
    s, outs = advance(s, ms(80))
    assert "churn_risk" not in kinds(outs)


def test_a_dissatisfied_survey_backs_live_trouble_but_raises_nothing_alone():
    s, _ = run([*regular(), survey(42)])
    _, outs = advance(s, ms(60))
    assert kinds(outs) == []
    s, _ = run([*regular(), complaint(45, severity=3), survey(47)])  # 2.2 + 1.0 + 1.0
    _, outs = advance(s, ms(60))
    (a,) = alerts(outs)
    assert a.at_ms == ms(52) and "2024-02-17 survey:very_dissatisfied" in a.evidence


def test_repeated_unresolved_calls_about_one_problem_raise_churn_risk():
    s, _ = run([*regular(), call(42, wait_s=900), call(43, wait_s=900), call(44, wait_s=900)])
    _, outs = advance(s, ms(44) + 1)
    (a,) = alerts(outs)
    assert a.at_ms == ms(44)  # 1.0 + 3 x 0.8 + 3 x 0.5 waits
    assert a.open_issues == ("2024-02-12 3 unresolved calls about service",)


def test_a_call_problem_solved_on_the_next_call_stops_counting():
    s, _ = run([*regular(), call(42, wait_s=900), call(43, resolved=True), call(44)])
    _, outs = advance(s, ms(80))
    assert "churn_risk" not in kinds(outs)


def test_churn_risk_is_not_raised_before_the_first_purchase():
    # A resolution (and the complaint) before the first purchase: nothing dated before it.
    s, outs = run([complaint(1, status="rejected"), call(2), call(3), call(4), purchase(20)])
    s, later = advance(s, ms(30))
    assert kinds(outs + list(later)) == []


def test_churn_risk_is_raised_only_once_per_episode():
    s, outs = run(
        [
            *regular(),
            complaint(45, "a"),
            complaint(46, "b", status="rejected"),
            call(47),
            call(48),
            survey(49),
        ]
    )
    _, later = advance(s, ms(60))
    assert kinds(outs + list(later)) == ["churn_risk"]
    assert alerts(outs)[0].at_ms == ms(46)  # fired by the next event, dated at the trouble


def test_churn_risk_escalates_to_decline_and_churned_in_the_same_episode():
    s, _ = run([*regular(), complaint(45)])
    _, outs = advance(s, ms(1000))
    assert kinds(outs) == ["churn_risk", "decline", "churned"]
    assert {a.episode for a in alerts(outs)} == {1}


def test_a_purchase_fourteen_days_after_churn_risk_closes_the_episode():
    s, _ = run([*regular(), complaint(45)])
    s, _ = advance(s, ms(52))
    s, outs = step(s, purchase(65))  # 13 days after the alert: too soon
    assert kinds(outs) == []
    s, outs = step(s, purchase(66.01))
    (a,) = alerts(outs)
    assert (a.kind, a.episode) == ("recovered", 1)


def test_the_same_trouble_never_raises_churn_risk_twice():
    s, _ = run([*regular(), complaint(45)])
    s, _ = advance(s, ms(52))
    s, _ = step(s, purchase(67))  # recovered; the complaint is still open
    s, outs = advance(s, ms(90))
    assert kinds(outs) == []
    s, _ = run([complaint(91, "k2")], s)
    _, outs = advance(s, ms(99))
    (a,) = alerts(outs)
    assert (a.kind, a.episode, a.at_ms) == ("churn_risk", 2, ms(98))


def test_no_churn_risk_once_the_customer_declined():
    s, _ = run(regular())
    s, _ = advance(s, s.next_deadline_ms)
    assert s.stage == "decline"
    day = (s.stage_since_ms - ms(0)) / DAY_MS
    s, _ = run([complaint(day + 1, status="rejected")], s)
    _, outs = advance(s, ms(day + 10))
    assert "churn_risk" not in kinds(outs)


# -- arrival order within the lateness never matters ----------------------------------

LATENESS_MS = Rules().allowed_lateness_ms


def _story(rng: random.Random) -> list:
    """A customer's year: purchases in an irregular rhythm, complaints that are opened
    and (mostly) resolved or rejected later, calls, surveys."""
    evs, day = [], 0.0
    while day < 300:
        evs.append(purchase(day))
        day += rng.uniform(3, 30)
    for k in range(rng.randint(0, 4)):
        opened = rng.uniform(0, 300)
        evs.append(
            complaint(
                opened,
                f"k{k}",
                category=rng.choice(["price", "service"]),
                severity=rng.randint(1, 5),
            )
        )
        fate = rng.random()
        if fate < 0.8:
            evs.append(
                complaint(
                    opened + rng.choice([0.01, 0.03, 0.2, 2, 9, 20]),
                    f"k{k}",
                    status=rng.choice(["resolved", "resolved", "rejected"]),
                )
            )
    for _ in range(rng.randint(0, 5)):
        evs.append(
            call(
                rng.uniform(0, 300),
                rng.choice(["service", "price"]),
                rng.random() < 0.5,
                rng.choice([0, 600]),
            )
        )
    for _ in range(rng.randint(0, 2)):
        evs.append(survey(rng.uniform(0, 300)))
    return sorted(evs, key=lambda e: e.occurred_at)


def _decide(events):
    state, outs = step_many(None, events)
    assert state is not None
    state, more = advance(state, ms(2000))
    alerts_ = sorted((a.alert_id, a.at_ms, a.open_issues) for a in alerts(outs + list(more)))
    return alerts_, (state.stage, state.defection_type, state.complaints, state.version)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 10**9), shuffle=st.integers(0, 10**9))
def test_any_arrival_order_within_the_lateness_and_any_duplicates_give_the_same_decisions(
    seed, shuffle
):
    events = _story(random.Random(seed))
    rng = random.Random(shuffle)
    arrival = []
    for e in events:
        t = epoch_ms(e.occurred_at)
        arrival.append((t + rng.uniform(0, LATENESS_MS), e))
        if rng.random() < 0.1:
            arrival.append((t + rng.uniform(0, LATENESS_MS), e))  # a redelivery
    shuffled = [e for _, e in sorted(arrival, key=lambda x: x[0])]
    assert _decide(shuffled) == _decide(events)
