"""The defection classifier (touchstream/domain/defection.py): signals, weights, decision."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Account, Call, Complaint, Purchase, Refund, Survey, epoch_ms
from touchstream.domain import defection, issues
from touchstream.domain.defection import (
    DAY_MS,
    EVIDENCE_WINDOW_DAYS,
    MAX_SIGNALS,
    MIN_MARGIN,
    MIN_SCORE,
    add_discount_day,
    classify,
    record,
    signals_of,
)

BASE = datetime(2024, 1, 1, tzinfo=UTC)
T0 = epoch_ms(BASE)
BASE_DAY = T0 // DAY_MS
_ids = itertools.count()


def at(day: float) -> datetime:
    return BASE + timedelta(days=day, hours=12)


def ms(day: float) -> int:
    return epoch_ms(at(day))


def common(day: float = 0) -> dict:
    return {"event_id": f"e{next(_ids)}", "customer_id": "c", "occurred_at": at(day)}


def complaint(category="product", severity=3, status="resolved") -> Complaint:
    return Complaint(
        type="complaint",
        complaint_id="k",
        category=category,
        severity=severity,
        status=status,
        **common(),
    )


def call(reason="service", direction="inbound", wait_s=0, resolved=True) -> Call:
    return Call(
        type="call",
        direction=direction,
        reason=reason,
        duration_s=60,
        wait_s=wait_s,
        resolved=resolved,
        **common(),
    )


def refund(reason) -> Refund:
    return Refund(type="refund", amount=Decimal("10"), reason=reason, **common())


def account(change) -> Account:
    return Account(type="account", change=change, **common())


def survey(satisfaction) -> Survey:
    return Survey(type="survey", satisfaction=satisfaction, **common())


def purchase(discount=None) -> Purchase:
    return Purchase(
        type="purchase", amount=Decimal("30"), currency="USD", discount=discount, **common()
    )


def weights_of(event) -> dict[str, float]:
    """The summed type weights of the signals an event leaves."""
    total: dict[str, float] = {}
    for code in signals_of(event):
        for k, v in defection._weights(code).items():
            total[k] = total.get(k, 0.0) + v
    return total


def sig(day: float, *codes: str) -> tuple[tuple[int, str], ...]:
    return tuple((ms(day), c) for c in codes)


def scores(d: defection.Defection) -> dict[str, float]:
    return dict(d.scores)


# -- signal codes and their weights ---------------------------------------------------


def tracked(*reports, category="product", severity=3) -> issues.Complaint:
    """A complaint with reports (day, status)."""
    out: tuple = ()
    for day, status in reports:
        out = issues.report(out, "k", category, severity, status, ms(day))
    (c,) = out
    return c


def test_complaints_leave_no_signal_code_they_are_followed_by_id():
    assert signals_of(complaint("product", 5, "open")) == ()


@pytest.mark.parametrize(("severity", "weight"), [(1, 1.4), (2, 1.8), (3, 2.2), (4, 2.6), (5, 3.0)])
@pytest.mark.parametrize("category", ["price", "product", "service"])
def test_a_complaint_resolved_slowly_weighs_its_category_by_severity_and_a_little_service(
    category, severity, weight
):
    c = tracked((0, "open"), (5, "resolved"), category=category, severity=severity)
    w, label = defection.complaint_weights(c, ms(10), 3.0)
    expected = {category: weight}
    expected["service"] = expected.get("service", 0.0) + 0.5
    assert w == pytest.approx(expected)
    assert label == f"complaint:{category}:{severity} resolved after 5 days"


def test_a_complaint_resolved_quickly_is_half_the_evidence():
    c = tracked((0, "open"), (0.5, "resolved"), category="product", severity=5)
    w, label = defection.complaint_weights(c, ms(10), 3.0)
    assert w == pytest.approx({"product": 1.5})
    assert label == "complaint:product:5 resolved in 12 h"


def test_a_complaint_of_category_other_weighs_nothing_on_its_subject():
    c = tracked((0, "open"), (0.5, "resolved"), category="other")
    assert defection.complaint_weights(c, ms(10), 3.0)[0] == {}


@pytest.mark.parametrize("status", ["open", "rejected"])
def test_an_unresolved_complaint_also_counts_against_the_service(status):
    c = tracked((0, status), category="product", severity=5)
    w, _ = defection.complaint_weights(c, ms(10), 3.0)
    assert w == pytest.approx({"product": 3.0, "service": 1.0})


def test_a_complaint_is_weighed_as_it_stood_at_the_decision():
    c = tracked((0, "open"), (20, "resolved"), category="service", severity=5)
    assert defection.complaint_weights(c, ms(10), 3.0)[1] == "complaint:service:5 open for 10 days"
    assert defection.complaint_weights(c, ms(-1), 3.0) is None


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("price", {"price": 1.0}),
        ("product", {"product": 1.0}),
        ("service", {"service": 1.0}),
        ("billing", {"service": 0.3}),
        ("other", {}),
    ],
)
def test_an_inbound_call_weighs_its_reason(reason, expected):
    c = call(reason)
    assert signals_of(c) == (f"call:{reason}",)
    assert weights_of(c) == pytest.approx(expected)


def test_an_outbound_call_leaves_no_reason_signal():
    assert signals_of(call("price", direction="outbound")) == ()


def test_a_long_wait_counts_against_the_service_from_300_seconds():
    assert signals_of(call("other", wait_s=299)) == ("call:other",)
    long = call("other", wait_s=300)
    assert signals_of(long) == ("call:other", "call_long_wait")
    assert weights_of(long) == pytest.approx({"service": 1.0})


def test_an_unresolved_call_counts_against_the_service_even_when_outbound():
    c = call("other", direction="outbound", resolved=False)
    assert signals_of(c) == ("call_unresolved:other",)
    assert weights_of(c) == pytest.approx({"service": 0.8})


def test_a_long_unresolved_service_call_adds_all_three_service_weights():
    assert weights_of(call("service", wait_s=900, resolved=False)) == pytest.approx(
        {"service": 2.8}
    )


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("defective", {"product": 2.0}),
        ("not_as_described", {"product": 2.0}),
        ("price", {"price": 2.0}),
        ("changed_mind", {"self_change": 0.5}),
        ("other", {}),
    ],
)
def test_a_refund_weighs_its_reason(reason, expected):
    r = refund(reason)
    assert signals_of(r) == (f"refund:{reason}",)
    assert weights_of(r) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("moved", {"self_change": 4.0}),
        ("life_event", {"self_change": 4.0}),
        ("closed", {"self_change": 2.0}),
        ("reopened", {}),
        ("contact_changed", {}),
    ],
)
def test_an_account_change_weighs_self_change(change, expected):
    a = account(change)
    assert signals_of(a) == (f"account:{change}",)
    assert weights_of(a) == pytest.approx(expected)


@pytest.mark.parametrize("level", ["fairly_dissatisfied", "dissatisfied", "very_dissatisfied"])
def test_a_dissatisfied_survey_alone_names_no_type(level):
    s = survey(level)
    assert signals_of(s) == (f"survey:{level}",)
    assert weights_of(s) == {}
    d = classify(sig(0, f"survey:{level}"), ms(1))
    assert d.type == "unknown"
    assert d.evidence == (f"{at(0):%Y-%m-%d} survey:{level}",)


@pytest.mark.parametrize("level", ["very_satisfied", "satisfied", "fairly_satisfied", "neutral"])
def test_a_neutral_or_satisfied_survey_leaves_no_signal(level):
    assert signals_of(survey(level)) == ()


def test_a_purchase_leaves_no_signal_code_discounted_days_are_kept_apart():
    assert signals_of(purchase()) == signals_of(purchase(0.5)) == ()
    assert add_discount_day(add_discount_day((), 7), 3) == (3, 7)
    assert add_discount_day((3, 7), 7) == (3, 7)


# -- the discount rule: a change of buying --------------------------------------------


def _discount_buyer(discounted_days, plain_days):
    days = sorted(discounted_days + plain_days)
    return classify(
        (),
        ms(days[-1]) + 60 * DAY_MS,
        tuple(BASE_DAY + d for d in days),
        ms(days[-1]),
        discount_days=tuple(BASE_DAY + d for d in discounted_days),
    )


def test_a_switch_from_full_price_to_discount_buying_names_price():
    d = _discount_buyer([40, 50, 60], [0, 10, 20, 30])
    assert d.type == "price" and scores(d)["price"] == 2.5
    assert d.evidence == (
        "2024-03-01 switched to discount buying: the latest 3 purchase days "
        "on discount, 0 of the 4 before",
    )


def test_two_discounted_purchases_in_a_row_at_the_end_are_enough():
    assert _discount_buyer([40, 50], [0, 10, 20, 30]).type == "price"


def test_a_customer_who_always_bought_on_discount_shows_no_price_change():
    d = _discount_buyer([0, 10, 20, 30, 40, 50], [])
    assert d.type == "unknown" and scores(d)["price"] == 0.0


def test_one_discounted_purchase_at_the_end_does_not_count():
    d = _discount_buyer([50], [0, 10, 20, 30, 40])
    assert scores(d)["price"] == 0.0


def test_discounts_that_do_not_end_the_relationship_do_not_count():
    d = _discount_buyer([30, 40], [0, 10, 20, 50])  # full price again at the end
    assert scores(d)["price"] == 0.0


# -- the decision ---------------------------------------------------------------------


def test_the_worked_example_of_the_docs_names_product_with_confidence_0_71():
    d = classify(
        sig(0, "complaint:product:5", "complaint_open") + sig(3, "refund:defective"), ms(10)
    )
    assert d.type == "product"
    assert d.confidence == 0.71
    assert scores(d) == pytest.approx(
        {"product": 5.0, "service": 1.0, "price": 0.0, "self_change": 0.0}
    )


def test_evidence_below_the_minimum_score_names_no_type():
    d = classify(sig(0, "call:product"), ms(10))  # 1.0 < MIN_SCORE
    assert scores(d)["product"] < MIN_SCORE
    assert d.type == "unknown"


def test_evidence_at_the_minimum_score_names_the_type():
    d = classify(sig(0, "call:product") + sig(1, "survey:dissatisfied"), ms(10))  # 1.0 + 0.5
    assert scores(d)["product"] == MIN_SCORE
    assert d.type == "product"


def test_a_dissatisfied_survey_backs_the_leading_explanation():
    d = classify(sig(0, "call:price") + sig(1, "survey:very_dissatisfied"), ms(10))
    assert scores(d)["price"] == 2.0 and d.type == "price"


def test_evidence_long_before_the_last_purchase_counts_half():
    last = ms(200)
    old = classify(sig(200 - 100, "refund:defective"), ms(260), (), last)
    recent = classify(sig(200 - 80, "refund:defective"), ms(260), (), last)
    assert scores(old)["product"] == 1.0 and old.type == "unknown"
    assert scores(recent)["product"] == 2.0 and recent.type == "product"


def test_two_types_too_close_name_no_type():
    # product 3.0 vs price 2.2: 3.0 < 1.5 x 2.2
    d = classify(sig(0, "complaint:product:5") + sig(1, "complaint:price:3"), ms(10))
    top, second = d.scores[0][1], d.scores[1][1]
    assert top < MIN_MARGIN * second
    assert d.type == "unknown"


def test_a_margin_of_exactly_one_and_a_half_names_the_type():
    # product 3.0 vs service 2.0 (two long waits)
    d = classify(
        sig(0, "complaint:product:5") + sig(1, "call_long_wait") + sig(2, "call_long_wait"), ms(10)
    )
    assert d.type == "product"


def test_no_evidence_at_all_is_unknown_with_full_confidence():
    d = classify((), ms(10))
    assert d.type == "unknown" and d.confidence == 1.0 and d.evidence == ()


def test_no_signals_and_signals_that_weigh_nothing_give_the_same_answer():
    weightless = sig(1, "call:other") + sig(2, "account:contact_changed")
    assert (
        classify((), ms(10))
        == classify(weightless, ms(10))
        == classify(sig(-400, "account:moved"), ms(10))
    )
    assert classify((), ms(10)).scores == (
        ("price", 0.0),
        ("product", 0.0),
        ("self_change", 0.0),
        ("service", 0.0),
    )


def test_evidence_is_dated_by_its_utc_day():
    d = classify(
        ((T0 + DAY_MS - 1, "account:moved"), (T0 + DAY_MS, "account:moved")), T0 + 2 * DAY_MS
    )
    assert d.evidence == ("2024-01-01 account:moved", "2024-01-02 account:moved")
    far = -(1000 << 32) - DAY_MS // 2  # before 1834: the datetime formatting
    assert classify(((far, "account:moved"),), far + DAY_MS).evidence == (
        f"{datetime.fromtimestamp(far / 1000, tz=UTC):%Y-%m-%d} account:moved",
    )


def test_evidence_older_than_the_window_before_the_last_purchase_is_ignored():
    last = ms(300)
    old = ((last - (EVIDENCE_WINDOW_DAYS + 1) * DAY_MS, "account:moved"),)
    d = classify(old, ms(500), (), last)
    assert d.type == "unknown" and d.evidence == ()
    inside = ((last - (EVIDENCE_WINDOW_DAYS - 1) * DAY_MS, "account:moved"),)
    assert classify(inside, ms(500), (), last).type == "self_change"  # at half weight


def test_the_window_is_anchored_at_the_last_purchase_however_long_the_silence():
    signals = sig(290, "account:moved")
    assert classify(signals, ms(300 + 365), (), ms(300)).type == "self_change"
    assert classify(signals, ms(300 + 365)).type == "unknown"  # anchored at now instead


def test_evidence_after_now_is_ignored():
    d = classify(sig(20, "account:moved"), ms(10))
    assert d.type == "unknown" and d.evidence == ()


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 400),
            st.sampled_from(
                [
                    "complaint:price:3",
                    "complaint:product:5",
                    "complaint_open",
                    "call:billing",
                    "call_long_wait",
                    "refund:price",
                    "refund:changed_mind",
                    "account:moved",
                    "survey:dissatisfied",
                    "purchase:discount",
                    "complaint:other:2",
                ]
            ),
        ),
        max_size=30,
    ),
    st.integers(0, 500),
)
def test_confidence_is_always_between_zero_and_one(entries, now_day):
    signals = tuple(sorted((ms(d), c) for d, c in entries))
    d = classify(signals, ms(now_day), tuple(BASE_DAY + day for day, _ in entries))
    assert 0.0 <= d.confidence <= 1.0
    assert d.type in (*defection.TYPES, "unknown")


def test_purer_evidence_gives_a_higher_confidence():
    pure = classify(sig(0, "refund:defective", "refund:defective"), ms(10))
    mixed = classify(sig(0, "refund:defective", "refund:defective", "call:price"), ms(10))
    assert pure.type == mixed.type == "product"
    assert pure.confidence > mixed.confidence


def test_evidence_names_the_day_and_the_code_oldest_first():
    log = record(record((), ms(5), ("refund:defective",)), ms(2), ("complaint:product:4",))
    d = classify(log, ms(10))
    assert d.evidence == ("2024-01-03 complaint:product:4", "2024-01-06 refund:defective")


def test_weightless_codes_are_not_listed_as_evidence():
    d = classify(sig(1, "complaint:other:3", "call:other") + sig(2, "account:moved"), ms(10))
    assert d.evidence == ("2024-01-03 account:moved",)


# -- the signal log -------------------------------------------------------------------


def test_record_adds_nothing_for_an_event_without_codes():
    log = sig(1, "call:price")
    assert record(log, ms(2), ()) is log


def test_record_keeps_the_signals_sorted_by_time():
    log = record((), ms(5), ("call:price",))
    log = record(log, ms(1), ("refund:price", "call_unresolved"))
    assert [t for t, _ in log] == sorted(t for t, _ in log)
    assert log[-1] == (ms(5), "call:price")


def test_record_keeps_only_the_latest_max_signals():
    log: tuple = ()
    for i in range(MAX_SIGNALS + 10):
        log = record(log, ms(i), ("call:price",))
    assert len(log) == MAX_SIGNALS
    assert log[0][0] == ms(10) and log[-1][0] == ms(MAX_SIGNALS + 9)


def test_record_drops_a_late_signal_older_than_a_full_log():
    log: tuple = ()
    for i in range(MAX_SIGNALS):
        log = record(log, ms(10 + i), ("call:price",))
    assert record(log, ms(0), ("account:moved",)) == log
