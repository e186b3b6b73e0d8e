"""The alert episode policy (touchstream/domain/alerts.py) through update.step/advance."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Account, Call, Complaint, Purchase, Refund, Survey, epoch_ms
from tests.steps import advance, step
from touchstream.domain import alerts as alert_policy
from touchstream.domain import lifecycle
from touchstream.domain.alerts import Alert
from touchstream.domain.customer import CustomerState
from touchstream.domain.lifecycle import Transition
from touchstream.domain.messages import alert_json
from touchstream.domain.units import DAY_MS

BASE = datetime(2024, 1, 1, tzinfo=UTC)
CID = "cust-7"
_ids = itertools.count()


def at(day: float) -> datetime:
    return BASE + timedelta(days=day, hours=12)


def ms(day: float) -> int:
    return epoch_ms(at(day))


def common(day: float) -> dict:
    return {"event_id": f"e{next(_ids)}", "customer_id": CID, "occurred_at": at(day)}


def purchase(day: float, amount: str = "30") -> Purchase:
    return Purchase(type="purchase", amount=Decimal(amount), currency="USD", **common(day))


def complaint(day: float, category="service", severity=5, status="open") -> Complaint:
    return Complaint(
        type="complaint",
        complaint_id=f"k{next(_ids)}",
        category=category,
        severity=severity,
        status=status,
        **common(day),
    )


def refund(day: float, reason="defective", amount="10") -> Refund:
    return Refund(type="refund", amount=Decimal(amount), reason=reason, **common(day))


def account(day: float, change="moved") -> Account:
    return Account(type="account", change=change, **common(day))


def survey(day: float, satisfaction="very_dissatisfied") -> Survey:
    return Survey(type="survey", satisfaction=satisfaction, **common(day))


def call(day: float, reason="service") -> Call:
    return Call(
        type="call",
        direction="inbound",
        reason=reason,
        duration_s=100,
        wait_s=600,
        resolved=False,
        **common(day),
    )


def run(events, state: CustomerState | None = None):
    outs: list = []
    for e in events:
        state, o = step(state, e)
        outs.extend(o)
    return state, outs


def alerts(outs) -> list[Alert]:
    return [o for o in outs if isinstance(o, Alert)]


def kinds(outs) -> list[str]:
    return [a.kind for a in alerts(outs)]


def regular(days=(0, 20, 40), amount="30"):
    return [purchase(d, amount) for d in days]


# The silence limits of regular(): an early rhythm of two 20-day gaps (lifecycle.Rules).
_DAYS = tuple(epoch_ms(BASE) // DAY_MS + d for d in (0, 20, 40))
DECLINE_AT = 40 + lifecycle.decline_after_days(_DAYS)  # day of the decline
CHURN_AT = 40 + lifecycle.churn_after_days(_DAYS)
AFTER = DECLINE_AT + 1  # a day after the decline


# -- no storm -------------------------------------------------------------------------


def test_a_silent_customer_gets_exactly_one_decline_then_one_churned_alert():
    s, _ = run(regular())
    s, outs = advance(s, ms(1000))
    assert kinds(outs) == ["decline", "churned"]
    decline, churned = alerts(outs)
    assert decline.at_ms == ms(DECLINE_AT)
    assert churned.at_ms == ms(CHURN_AT)
    assert decline.episode == churned.episode == 1


def test_further_events_and_advances_add_no_decline_or_churned_alert():
    s, first = run(regular())
    s, outs = advance(s, ms(1000))
    more: list = []
    for i in range(30):
        s, o = advance(s, ms(1000 + 10 * i))
        more.extend(o)
        ev = [complaint, refund, account, survey, call][i % 5](1000 + 10 * i)
        s, o = step(s, ev)
        more.extend(o)
    s, o = advance(s, ms(5000))
    more.extend(o)
    assert kinds(first + list(outs)) == ["decline", "churned"]
    assert not [a for a in alerts(more) if a.kind in ("decline", "churned", "churn_risk")]


def test_advancing_the_same_time_twice_raises_nothing_the_second_time():
    s, _ = run(regular())
    s, outs = advance(s, ms(AFTER))
    assert kinds(outs) == ["decline"]
    s2, outs2 = advance(s, ms(AFTER))
    assert outs2 == () and s2 == s


# -- episodes -------------------------------------------------------------------------


def test_recovered_closes_the_episode_and_a_later_decline_opens_episode_two():
    s, _ = run(regular())
    s, outs = advance(s, ms(AFTER + 4))
    assert kinds(outs) == ["decline"]
    s, outs = step(s, purchase(AFTER + 5))
    (rec,) = alerts(outs)
    assert (rec.kind, rec.episode, rec.previous_stage) == ("recovered", 1, "decline")
    assert rec.stage == "formation"
    s, outs = advance(s, ms(2000))
    decline = alerts(outs)[0]
    assert (decline.kind, decline.episode) == ("decline", 2)
    assert decline.alert_id == f"{CID}/2/decline"
    assert s.episode == 2


def test_a_reactivation_after_churn_is_recovered_in_the_same_episode():
    s, _ = run(regular())
    s, _ = advance(s, ms(1000))
    s, outs = step(s, purchase(1000))
    (rec,) = alerts(outs)
    assert (rec.kind, rec.episode, rec.previous_stage, rec.stage) == (
        "recovered",
        1,
        "churned",
        "exploration",
    )


def test_a_purchase_without_an_open_episode_raises_no_recovered_alert():
    _s, outs = run(regular((0, 10, 20, 30, 40)))
    assert kinds(outs) == []


def test_an_account_closed_event_raises_a_decline_alert_at_once():
    _s, outs = run([*regular(), account(45, "closed")])
    (a,) = alerts(outs)
    assert (a.kind, a.at_ms, a.previous_stage, a.stage) == (
        "decline",
        ms(45),
        "formation",
        "decline",
    )
    assert a.defection_type == "self_change"  # closed: self_change 2.0 alone


def test_the_alert_follows_the_transition_it_belongs_to():
    s, _ = run(regular())
    _, outs = advance(s, ms(500))
    assert [type(o) for o in outs] == [Transition, Alert, Transition, Alert]


# -- severity, JSON, message ----------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "sev", "label"),
    [
        ("-50", 1, "low"),
        ("0", 1, "low"),
        ("99.99", 1, "low"),
        ("100", 2, "medium"),
        ("499.99", 2, "medium"),
        ("500", 3, "high"),
        ("1999.99", 3, "high"),
        ("2000", 4, "critical"),
        ("100000", 4, "critical"),
    ],
)
def test_severity_grows_with_the_net_spend_tiers(net, sev, label):
    assert alert_policy.severity(Decimal(net)) == sev
    assert alert_policy.SEVERITY_LABELS[sev - 1] == label


@pytest.mark.parametrize(("amount", "sev"), [("33.33", 1), ("34", 2), ("170", 3), ("700", 4)])
def test_an_alerts_severity_reflects_the_customers_net_spend(amount, sev):
    s, _ = run(regular(amount=amount))
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.net_spend == Decimal(amount) * 3
    assert a.severity == sev


def test_refunds_lower_the_severity():
    s, _ = run([*regular(amount="40"), refund(41, "other", amount="30")])  # net 90
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.net_spend == Decimal("90")
    assert a.severity == 1 and a.severity_label == "low"


def test_to_json_has_schema_version_one_and_iso_times_ending_in_z():
    s, _ = run(regular())
    _, outs = advance(s, ms(AFTER))
    j = alert_json(alerts(outs)[0])
    assert j["schema_version"] == 1
    assert j["at"] == alert_policy.iso_ms(ms(DECLINE_AT))
    assert j["last_purchase_at"] == "2024-02-10T12:00:00Z"
    assert j["alert_id"] == f"{CID}/1/decline"
    assert j["net_spend"] == "90"
    assert j["severity_label"] == "low"
    assert isinstance(j["evidence"], list)


def test_to_json_keeps_milliseconds_and_still_ends_in_z():
    a = Alert(
        alert_id="x/1/decline",
        customer_id="x",
        at_ms=ms(0) + 123,
        kind="decline",
        episode=1,
        stage="decline",
        previous_stage="formation",
        defection_type="unknown",
        confidence=1.0,
        severity=1,
        net_spend=Decimal(5),
        last_purchase_ms=None,
        evidence=(),
        message="m",
        version=3,
    )
    j = alert_json(a)
    assert j["at"].endswith("Z") and j["at"].startswith("2024-01-01T12:00:00.123")
    assert j["last_purchase_at"] is None


def test_the_message_mentions_the_customer_and_the_defection_type():
    s, _ = run([*regular(), refund(41, "defective"), refund(42, "not_as_described")])
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.defection_type == "product"
    assert CID in a.message
    assert "product defection" in a.message
    assert f"declining after {DECLINE_AT - 40:.0f} days without a purchase" in a.message


def test_the_message_writes_self_change_with_a_hyphen():
    s, _ = run([*regular(), account(41, "moved")])
    _, outs = advance(s, ms(AFTER))
    risk, a = alerts(outs)  # a move is live trouble at once, then the silence
    assert risk.kind == "churn_risk" and risk.open_issues == ("2024-02-11 account:moved",)
    assert a.kind == "decline" and a.defection_type == "self_change"
    assert "self-change defection" in a.message and CID in a.message


def test_the_message_of_an_unknown_defection_says_there_is_no_clear_reason():
    s, _ = run(regular())
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.defection_type == "unknown"
    assert "no clear reason" in a.message


def test_the_alert_carries_the_state_version_that_raised_it():
    s, _ = run([*regular(), refund(41, "other")])
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.version == s.version == 4


def test_the_alert_evidence_is_the_classifiers_dated_codes():
    s, _ = run([*regular(), refund(41, "defective")])
    _, outs = advance(s, ms(AFTER))
    (a,) = alerts(outs)
    assert a.evidence == ("2024-02-11 refund:defective",)
    assert a.last_purchase_ms == ms(40) == a.at_ms - (DECLINE_AT - 40) * DAY_MS


@settings(max_examples=2000, deadline=None)
@given(
    ms_=st.integers(-62_135_596_800_000, 253_402_300_799_999)  # years 1..9999
    | st.integers(-(1000 << 32), 1000 << 32)
    | st.integers(0, 4_102_444_800).map(lambda s: s * 1000)
)  # whole seconds
def test_iso_ms_is_the_datetime_isoformat_of_the_millisecond_with_a_z(ms_):
    expected = datetime.fromtimestamp(ms_ / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
    assert alert_policy.iso_ms(ms_) == expected
