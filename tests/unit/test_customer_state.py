"""A customer's state (domain/customer.py, update.py): RFM and the lifetimes summary."""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events import Account, Call, Complaint, Purchase, Refund, Survey, epoch_ms
from tests.steps import step, step_batch, step_many
from touchstream.domain import codec
from touchstream.domain.customer import (
    DEDUP_WINDOW,
    Accepted,
    CustomerState,
    Duplicate,
    Working,
    id_hash,
)
from touchstream.domain.units import DAY_MS
from touchstream.domain.update import apply

BASE = datetime(2023, 1, 1, tzinfo=UTC)  # "day 0" of the examples
BASE_DAY = epoch_ms(BASE) // DAY_MS
CID = "cust-1"

_ids = iter(range(10**9))


def _next_id() -> str:
    return f"evt-{next(_ids)}"


def at(day: int, seconds: int = 12 * 3600) -> datetime:
    return BASE + timedelta(days=day, seconds=seconds)


def purchase(day, amount, *, cid=CID, eid=None, seconds=12 * 3600) -> Purchase:
    return Purchase(
        type="purchase",
        event_id=eid or _next_id(),
        customer_id=cid,
        occurred_at=at(day, seconds),
        amount=Decimal(str(amount)),
        currency="EUR",
    )


def refund(day, amount, *, cid=CID, eid=None) -> Refund:
    return Refund(
        type="refund",
        event_id=eid or _next_id(),
        customer_id=cid,
        occurred_at=at(day),
        amount=Decimal(str(amount)),
        reason="defective",
    )


def other_events(day: int, cid: str = CID) -> list:
    common = {"customer_id": cid, "occurred_at": at(day)}
    return [
        Call(
            type="call",
            event_id=_next_id(),
            direction="inbound",
            reason="price",
            duration_s=60,
            resolved=True,
            **common,
        ),
        Complaint(
            type="complaint",
            event_id=_next_id(),
            complaint_id="k",
            category="price",
            severity=2,
            status="open",
            **common,
        ),
        Survey(type="survey", event_id=_next_id(), satisfaction="neutral", **common),
        Account(type="account", event_id=_next_id(), change="moved", **common),
    ]


def fold(events, state: CustomerState | None = None) -> CustomerState:
    return reduce(lambda s, ev: step(s, ev)[0], events, state)


def ms(day: int, seconds: int = 12 * 3600) -> int:
    return epoch_ms(at(day, seconds))


# -- examples ------------------------------------------------------------------------


def test_a_first_purchase_sets_first_and_last_purchase_and_frequency_zero():
    s, outs = step(None, purchase(1, "10.00"))
    assert s.customer_id == CID
    assert s.first_purchase_ms == s.last_purchase_ms == ms(1)
    assert s.purchases == 1
    assert s.purchase_total == Decimal("10.00")
    assert s.frequency == 0
    assert s.recency_span_days == 0
    assert s.monetary_value == 0
    assert s.version == 1
    assert outs[0] == Accepted(outs[0].event, 1)
    assert [(o.from_stage, o.to_stage) for o in outs[1:]] == [(None, "exploration")]


def test_two_purchases_on_the_same_utc_day_count_as_one_purchase_day_but_two_purchases():
    s = fold([purchase(1, "10", seconds=60), purchase(1, "5", seconds=23 * 3600)])
    assert s.purchases == 2
    assert s.purchase_days == (BASE_DAY + 1,)
    assert s.frequency == 0
    assert s.monetary_value == 0
    assert s.first_purchase_ms == ms(1, 60)
    assert s.last_purchase_ms == ms(1, 23 * 3600)


def test_purchase_days_are_utc_calendar_days_whatever_the_offset_of_the_event_time():
    late_evening_utc = Purchase(
        type="purchase",
        event_id=_next_id(),
        customer_id=CID,
        amount=Decimal(5),
        currency="EUR",
        # 01:00 on day 2 at +02:00 is 23:00 UTC on day 1.
        occurred_at=(BASE + timedelta(days=2, hours=1)).replace(
            tzinfo=timezone(timedelta(hours=2))
        ),
    )
    s = fold([purchase(1, "10"), late_evening_utc])
    assert s.purchase_days == (BASE_DAY + 1,)
    assert s.frequency == 0


def test_monetary_value_is_the_mean_spend_of_the_repeat_days_excluding_the_first_day():
    # Day 1: 10 + 5 (the first day, excluded), day 3: 7, day 5: 9 -> mean(7, 9) = 8.
    s = fold([purchase(1, "10"), purchase(1, "5"), purchase(3, "7"), purchase(5, "9")])
    assert s.frequency == 2
    assert s.recency_span_days == 4
    assert s.monetary_value == Decimal(8)
    assert s.purchase_total == Decimal(31)
    assert s.first_day_spend == Decimal(15)


def test_a_repeat_day_with_several_purchases_counts_as_the_sum_of_that_day():
    # Day 0: 1 (first), day 2: 4 + 6 = 10, day 9: 2 -> mean(10, 2) = 6.
    s = fold([purchase(0, "1"), purchase(2, "4"), purchase(2, "6"), purchase(9, "2")])
    assert s.frequency == 2
    assert s.monetary_value == Decimal(6)


def test_refunds_reduce_net_spend_but_not_monetary_value():
    events = [purchase(1, "10"), purchase(3, "7"), purchase(5, "9")]
    before = fold(events)
    after = fold([*events, refund(6, "4.50")])
    assert after.refunds == 1
    assert after.refund_total == Decimal("4.50")
    assert after.net_spend == before.net_spend - Decimal("4.50") == Decimal("21.50")
    assert after.monetary_value == before.monetary_value == Decimal(8)
    assert after.frequency == before.frequency
    assert after.purchases == before.purchases


def test_a_duplicated_event_id_changes_nothing_and_returns_a_duplicate_output():
    first = purchase(1, "10", eid="same")
    s1, _ = step(None, first)
    again = purchase(4, "99", eid="same")  # same id, different content: still a duplicate
    s2, outs = step(s1, again)
    assert s2 == s1
    assert s2 is s1
    assert outs == (Duplicate(again),)


def test_the_latest_dedup_window_ids_are_remembered_and_the_oldest_forgotten():
    events = [purchase(1, "1", eid=f"w{i}") for i in range(DEDUP_WINDOW + 1)]
    s, _outs = step_many(None, events)
    assert len(s.recent_ids) == DEDUP_WINDOW
    assert s.recent_ids == tuple(id_hash(f"w{i}") for i in range(1, DEDUP_WINDOW + 1))
    _, again = step_many(s, [purchase(2, "1", eid="w1"), purchase(2, "1", eid="w0")])
    assert [type(o) for o in again if type(o) in (Accepted, Duplicate)] == [Duplicate, Accepted]


def test_an_id_whose_fingerprint_straddles_two_remembered_ones_is_not_a_duplicate():
    h = id_hash("x").to_bytes(4, sys.byteorder)
    # Two remembered fingerprints whose bytes hold h across their boundary.
    left = int.from_bytes(b"\0\0" + h[:2], sys.byteorder)
    right = int.from_bytes(h[2:] + b"\0\0", sys.byteorder)
    w = Working.of(CustomerState(CID, version=2, recent_ids=(left, right)))
    assert apply(w, purchase(1, "5", eid="x"), ms(1)) is not None
    assert apply(w, purchase(1, "5", eid="x"), ms(1)) is None  # now it is remembered


def test_non_purchase_events_bump_the_version_but_not_the_purchases():
    s = fold([purchase(1, "10")])
    after = fold(other_events(2), s)
    assert after.version == s.version + 4
    assert after.purchases == s.purchases
    assert after.purchase_total == s.purchase_total
    assert after.purchase_days == s.purchase_days
    assert after.last_purchase_ms == s.last_purchase_ms
    assert after.last_event_ms == ms(2)


def test_a_customer_with_only_non_purchase_events_has_no_purchase_summary():
    s = fold(other_events(3))
    assert s.version == 4
    assert s.purchases == 0
    assert s.first_purchase_ms is None and s.last_purchase_ms is None
    assert s.frequency == 0 and s.monetary_value == 0
    assert s.age_days(ms(10)) == 0
    assert s.recency_days(ms(10)) is None


def test_t_and_recency_days_are_computed_against_the_given_as_of():
    s = fold([purchase(1, "10"), purchase(3, "7"), purchase(5, "9")])
    as_of = ms(10, 3600)
    assert s.age_days(as_of) == 9  # lifetimes' T: first purchase day to the as-of day
    assert s.recency_days(as_of) == 5  # since the last purchase day
    assert s.age_days(ms(20)) == 19
    assert s.recency_days(ms(5, 23 * 3600)) == 0


def test_a_late_purchase_on_an_earlier_day_becomes_the_new_first_day_and_moves_first_day_spend():
    s = fold([purchase(3, "7"), purchase(5, "9")])
    assert s.first_day_spend == Decimal(7)
    assert s.monetary_value == Decimal(9)
    late = fold([purchase(1, "10")], s)
    assert late.purchase_days == (BASE_DAY + 1, BASE_DAY + 3, BASE_DAY + 5)
    assert late.first_day_spend == Decimal(10)
    assert late.first_purchase_ms == ms(1)
    assert late.last_purchase_ms == ms(5)
    assert late.frequency == 2
    assert late.recency_span_days == 4
    assert late.monetary_value == Decimal(8)  # mean(7, 9): day 3 is now a repeat day


def test_a_late_event_does_not_move_the_last_event_time_back():
    s = fold([purchase(5, "9"), *other_events(2)])
    assert s.first_event_ms == ms(2)
    assert s.last_event_ms == ms(5)


def test_a_state_round_trips_through_its_stored_bytes():
    s = fold([purchase(1, "10.25"), purchase(3, "7.10"), refund(4, "1.05"), *other_events(6)])
    assert codec.decode(codec.encode(s, 2, 41))[0].freeze() == s
    assert codec.decode(codec.encode(CustomerState("x"), 0, 0))[0].freeze() == CustomerState("x")


# -- properties ----------------------------------------------------------------------

amounts = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False)
days = st.integers(0, 2 * 365)
seconds_of_day = st.integers(0, DAY_MS // 1000 - 1)


@st.composite
def purchase_lists(draw, cid: str = CID, min_size: int = 1, max_size: int = 25):
    specs = draw(
        st.lists(st.tuples(days, seconds_of_day, amounts), min_size=min_size, max_size=max_size)
    )
    return [
        purchase(d, a, cid=cid, eid=f"{cid}-p{i}", seconds=s) for i, (d, s, a) in enumerate(specs)
    ]


@st.composite
def mixed_events(draw, cid: str = CID, max_size: int = 25):
    """Purchases, refunds and the other types for one customer, with unique ids."""
    events = []
    for i, (kind, d, a) in enumerate(
        draw(
            st.lists(
                st.tuples(st.sampled_from(["purchase", "refund", "other"]), days, amounts),
                max_size=max_size,
            )
        )
    ):
        eid = f"{cid}-e{i}"
        if kind == "purchase":
            events.append(purchase(d, a, cid=cid, eid=eid))
        elif kind == "refund":
            events.append(refund(d, a, cid=cid, eid=eid))
        else:
            ev = other_events(d, cid)[i % 4]
            events.append(ev.model_copy(update={"event_id": eid}))
    return events


def summary(s: CustomerState) -> tuple:
    return (
        s.purchases,
        s.frequency,
        s.recency_span_days,
        s.monetary_value,
        s.purchase_total,
        s.first_purchase_ms,
        s.last_purchase_ms,
        s.purchase_days,
        s.first_day_spend,
    )


@settings(max_examples=100, deadline=None)
@given(data=st.data(), events=purchase_lists())
def test_the_summary_does_not_depend_on_the_order_of_the_purchases(data, events):
    shuffled = data.draw(st.permutations(events))
    assert summary(fold(shuffled)) == summary(fold(events))


@settings(max_examples=100, deadline=None)
@given(events=mixed_events())
def test_applying_every_event_twice_gives_the_same_state_as_applying_it_once(events):
    doubled = [ev for e in events for ev in (e, e)]
    once = fold(events)
    assert fold(doubled) == once
    duplicates = []
    s = None
    for ev in doubled:
        s, outs = step(s, ev)
        duplicates += [o for o in outs if isinstance(o, Duplicate)]
    assert len(duplicates) == len(events)


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_step_batch_over_interleaved_customers_equals_folding_each_customer(data):
    customers = [f"c{i}" for i in range(data.draw(st.integers(1, 6)))]
    per_customer = {c: data.draw(mixed_events(cid=c, max_size=10)) for c in customers}
    # Some customers already have a state from an earlier batch.
    split = {c: data.draw(st.integers(0, len(evs))) for c, evs in per_customer.items()}
    earlier = {c: fold(evs[: split[c]]) for c, evs in per_customer.items() if split[c]}
    queues = {c: list(evs[split[c] :]) for c, evs in per_customer.items()}
    batch = []
    while any(queues.values()):
        c = data.draw(st.sampled_from([c for c, q in queues.items() if q]))
        batch.append(queues[c].pop(0))

    changed, outputs = step_batch(earlier, batch)

    assert len([o for o in outputs if isinstance(o, Accepted | Duplicate)]) == len(batch)
    assert set(changed) == {ev.customer_id for ev in batch}
    for c, evs in per_customer.items():
        if c in changed:
            assert changed[c] == fold(evs), c
    assert earlier == {c: fold(evs[: split[c]]) for c, evs in per_customer.items() if split[c]}


@settings(max_examples=100, deadline=None)
@given(events=mixed_events(), partition=st.integers(0, 2**31 - 1), offset=st.integers(0, 2**63 - 1))
def test_any_state_round_trips_through_its_stored_bytes(events, partition, offset):
    s = fold(events) or CustomerState(customer_id=CID)
    work, p, o = codec.decode(codec.encode(s, partition, offset))
    assert (work.freeze(), p, o) == (s, partition, offset)
    assert codec.partition_of(codec.encode(s, partition, offset)) == partition


# -- against lifetimes ---------------------------------------------------------------


@dataclass(frozen=True)
class LifetimesSummary:
    frequency: int
    recency: int
    T: int
    monetary_value: Decimal


def reference_summary(transactions: list[tuple[int, Decimal]], as_of_day: int) -> LifetimesSummary:
    """lifetimes.utils.summary_data_from_transaction_data(freq="D"), without pandas:
    transactions are summed per day; the first day is the birth and not a repeat."""
    per_day: dict[int, Decimal] = defaultdict(Decimal)
    for day, amount in transactions:
        per_day[day] += amount
    ordered = sorted(per_day)
    repeat = [per_day[d] for d in ordered[1:]]
    return LifetimesSummary(
        frequency=len(ordered) - 1,
        recency=ordered[-1] - ordered[0],
        T=as_of_day - ordered[0],
        monetary_value=sum(repeat, Decimal(0)) / len(repeat) if repeat else Decimal(0),
    )


def domain_summary(s: CustomerState, as_of_ms: int) -> LifetimesSummary:
    return LifetimesSummary(
        s.frequency, s.recency_span_days, s.age_days(as_of_ms), s.monetary_value
    )


@settings(max_examples=100, deadline=None)
@given(events=purchase_lists(), after=st.integers(0, 400))
def test_the_summary_matches_a_reference_reimplementation_of_lifetimes(events, after):
    as_of_day = max(epoch_ms(e.occurred_at) // DAY_MS for e in events) + after
    transactions = [(epoch_ms(e.occurred_at) // DAY_MS, e.amount) for e in events]
    assert domain_summary(fold(events), as_of_day * DAY_MS) == reference_summary(
        transactions, as_of_day
    )


def test_the_reference_reimplementation_agrees_with_lifetimes_itself():
    pd = pytest.importorskip("pandas")
    lifetimes_utils = pytest.importorskip("lifetimes.utils")
    rows = [
        ("a", 1, "10"),
        ("a", 1, "5"),
        ("a", 3, "7"),
        ("a", 5, "9"),
        ("b", 2, "3"),
        ("c", 0, "1"),
        ("c", 2, "4"),
        ("c", 2, "6"),
        ("c", 9, "2"),
    ]
    as_of_day = 12
    frame = pd.DataFrame(
        {
            "customer": [c for c, _, _ in rows],
            "date": [BASE + timedelta(days=d, hours=12) for _, d, _ in rows],
            "amount": [float(a) for _, _, a in rows],
        }
    )
    frame["date"] = frame["date"].dt.tz_localize(None)
    expected = lifetimes_utils.summary_data_from_transaction_data(
        frame,
        "customer",
        "date",
        "amount",
        observation_period_end=(BASE + timedelta(days=as_of_day)).replace(tzinfo=None),
        freq="D",
    )
    for customer in ("a", "b", "c"):
        mine = reference_summary([(d, Decimal(a)) for c, d, a in rows if c == customer], as_of_day)
        theirs = expected.loc[customer]
        assert (mine.frequency, mine.recency, mine.T) == (
            theirs["frequency"],
            theirs["recency"],
            theirs["T"],
        ), customer
        assert float(mine.monetary_value) == pytest.approx(theirs["monetary_value"]), customer
        events = [purchase(d, a, cid=customer) for c, d, a in rows if c == customer]
        assert domain_summary(fold(events), ms(as_of_day, 0)) == LifetimesSummary(
            mine.frequency, mine.recency, mine.T, mine.monetary_value
        )


@settings(max_examples=100, deadline=None)
@given(events=mixed_events(), split=st.integers(0, 25))
def test_step_many_equals_stepping_each_event(events, split):
    earlier = fold(events[:split])
    outputs = []
    s = earlier
    for ev in events[split:]:
        s, outs = step(s, ev)
        outputs.extend(outs)
    assert step_many(earlier, events[split:]) == (s, outputs)
