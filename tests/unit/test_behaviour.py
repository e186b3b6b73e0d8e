"""The customer-side stream (touchstream/behaviour.py) and the evaluator's measures on it
(touchstream/evaluate.py), the evaluator checked on small hand-built decisions."""

from __future__ import annotations

import itertools
import random
import statistics
from collections import Counter, defaultdict
from datetime import timedelta

import orjson
import pytest

from schemas.decode import Rejected, decode
from touchstream.behaviour import (
    END,
    MIX,
    SIGNALS,
    START,
    _Ids,
    _Life,
    instant_of,
    plain,
    simulate_behaviour,
)
from touchstream.evaluate import (
    Decisions,
    decisions_diff,
    decisions_equal,
    evaluate,
    from_clickhouse,
    open_issues,
    run_in_process,
)
from touchstream.simulate import DEFECTORS, Truth, disorder

N = 600


@pytest.fixture(scope="module")
def stream():
    return simulate_behaviour(N, seed=3)


@pytest.fixture(scope="module")
def lives(stream):
    """customer -> (truth, the customer's events as plain contract dicts, in time order)."""
    events, truths = stream
    per: dict[str, list[dict]] = defaultdict(list)
    for e in events:
        p = plain(e)
        per[p["customer_id"]].append(p)
    return {t.customer_id: (t, per[t.customer_id]) for t in truths}


def _of(lives, *archetypes):
    return [(t, evs) for t, evs in lives.values() if t.archetype in archetypes]


def _purchases(evs):
    return [e for e in evs if e["type"] == "purchase"]


def _gap_cv(evs) -> float:
    times = [instant_of(e).timestamp() / 86_400 for e in _purchases(evs)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.pstdev(gaps) / statistics.mean(gaps)


# -- the generator ----------------------------------------------------------------------


def test_the_stream_is_the_same_for_the_same_seed(stream):
    again = simulate_behaviour(N, seed=3)
    assert again[0] == stream[0]
    assert again[1] == stream[1]


def test_another_seed_gives_another_stream(stream):
    assert simulate_behaviour(N, seed=4)[0] != stream[0]


def test_every_archetype_is_present_in_its_share(stream):
    counts = Counter(t.archetype for t in stream[1])
    assert counts == {a: round(N * share) for a, share in MIX.items()}


def test_customer_ids_do_not_name_the_archetype(stream):
    for t in stream[1]:
        assert t.archetype not in t.customer_id


def test_every_event_passes_the_event_contract(stream):
    events, truths = stream
    decoded = [decode(orjson.dumps(e)) for e in events]
    rejected = [(e, d) for e, d in zip(events, decoded, strict=True) if isinstance(d, Rejected)]
    assert rejected == []
    assert {d.customer_id for d in decoded} == {t.customer_id for t in truths}


def test_events_are_in_event_time_order_with_unique_ids(stream):
    events, _ = stream
    decoded = [decode(orjson.dumps(e)) for e in events]
    times = [d.occurred_at for d in decoded]
    assert times == sorted(times)
    assert times[0] >= START and times[-1] < END
    assert len({d.event_id for d in decoded}) == len(events)


def test_a_purchase_on_the_first_morning_behind_utc_stays_inside_the_period():
    life = _Life(random.Random(1), "C1", _Ids())
    life.offset = -300  # 2024-01-01 01:00Z is still 2023-12-31 in New York
    times = [life._daytime(START + timedelta(hours=1)) for _ in range(50)]
    assert min(times) >= START
    life.offset = 60
    assert all(
        t.date() == START.date()
        for t in (life._daytime(START + timedelta(hours=1)) for _ in range(50))
    )


def test_about_a_quarter_of_events_are_cloudevents_with_the_customer_as_subject(stream):
    events, _ = stream
    ce = [e for e in events if "specversion" in e]
    assert 0.2 < len(ce) / len(events) < 0.3
    for e in ce:
        assert e["specversion"] == "1.0"
        assert e["type"].startswith("com.touchstream.")
        assert "customer_id" not in e and isinstance(e["data"], dict)
        assert decode(orjson.dumps(e)).customer_id == e["subject"]


def test_many_event_times_carry_a_local_offset_for_the_same_instant(stream):
    events, _ = stream
    stamps = [e.get("occurred_at") or e["time"] for e in events]
    local = [s for s in stamps if not s.endswith("Z") and not s.endswith("+00:00")]
    assert len(local) / len(stamps) > 0.2
    assert {"+02:00", "-05:00", "+05:30"} <= {s[-6:] for s in local}
    for e in events[:2000]:
        assert decode(orjson.dumps(e)).occurred_at == instant_of(e)


def test_complaint_updates_reuse_the_complaint_id_and_a_reopened_one_is_sent_open_again(lives):
    statuses: dict[str, list[str]] = defaultdict(list)
    for _, evs in lives.values():
        for e in evs:
            if e["type"] == "complaint":
                statuses[e["complaint_id"]].append(e["status"])
    assert statuses
    for history in statuses.values():
        assert history[0] == "open"
        assert all(a != b for a, b in itertools.pairwise(history))
    assert any(h.count("open") == 2 for h in statuses.values())  # reopened
    assert {h[-1] for h in statuses.values()} == {"open", "resolved", "rejected"}


def test_loyal_gaps_have_a_coefficient_of_variation_between_0_3_and_0_5(lives):
    cvs = [_gap_cv(evs) for _, evs in _of(lives, "loyal", "discount_loyal")]
    assert 0.3 <= statistics.median(cvs) <= 0.5


def test_irregular_gaps_have_a_coefficient_of_variation_between_0_5_and_0_8(lives):
    cvs = [_gap_cv(evs) for _, evs in _of(lives, "irregular")]
    assert 0.5 <= statistics.median(cvs) <= 0.8


def test_stayers_buy_from_the_first_month_to_the_last_weeks(lives):
    for t, evs in _of(lives, "loyal", "irregular", "discount_loyal"):
        buys = _purchases(evs)
        assert instant_of(buys[0]) < START + timedelta(days=31)
        assert instant_of(buys[-1]) > END - timedelta(days=130), t


def test_stayers_trouble_is_always_handled(lives):
    for t, evs in _of(lives, "loyal", "irregular", "discount_loyal", "wobbler"):
        last: dict[str, str] = {}
        for e in evs:
            if e["type"] == "complaint":
                last[e["complaint_id"]] = e["status"]
        assert set(last.values()) <= {"resolved"}, t
        calls = [e for e in evs if e["type"] == "call"]
        for i, c in enumerate(calls):
            if not c["resolved"]:  # solved by a later call about the same problem
                assert any(d["resolved"] and d["reason"] == c["reason"] for d in calls[i + 1 :])


def test_discount_loyal_customers_buy_on_discount_nearly_every_time(lives):
    for _, evs in _of(lives, "discount_loyal"):
        buys = _purchases(evs)
        on_discount = [b for b in buys if 0.15 <= b.get("discount", 0) <= 0.5]
        assert len(on_discount) / len(buys) > 0.8


def test_seasonal_customers_buy_only_in_season_and_the_period_ends_in_it(lives):
    for t, evs in _of(lives, "seasonal"):
        months = {instant_of(b).month for b in _purchases(evs)}
        assert months <= {10, 11, 12, 1, 2}, t
        assert instant_of(_purchases(evs)[-1]) > END - timedelta(days=21)
        assert t.stage == "active"


def test_new_customers_first_buy_in_the_last_two_months_then_once_or_twice_more(lives):
    for t, evs in _of(lives, "new"):
        buys = _purchases(evs)
        assert 2 <= len(buys) <= 3
        assert instant_of(buys[0]) >= END - timedelta(days=61)
        assert instant_of(buys[-1]) >= END - timedelta(days=15)  # still buying at the end
        assert (t.stage, t.alerted) == ("active", False)


def test_one_off_buyers_buy_once_early_and_do_nothing_else(lives):
    for t, evs in _of(lives, "one_off"):
        assert [e["type"] for e in evs] == ["purchase"]
        assert instant_of(evs[0]) < START + timedelta(days=0.4 * 730 + 1)
        assert (t.stage, t.defection) == ("churned", "unknown")


def test_silent_leavers_have_no_touchpoint_in_their_last_6_months(lives):
    six_months = timedelta(days=183)
    for t, evs in _of(lives, "silent_leaver"):
        buys = _purchases(evs)
        last = instant_of(buys[-1])
        assert len(buys) >= 6  # an established relationship
        assert instant_of(evs[-1]) == last  # nothing after the last purchase
        assert last < END - six_months
        assert [
            e for e in evs if e["type"] != "purchase" and instant_of(e) > last - six_months
        ] == []
        assert (t.stage, t.defection) == ("churned", "unknown")


def _signals_seen(evs) -> set[str]:
    """Defection signals in the customer's last 90 days of buying and after, read from the
    events as a customer-care analyst would (independent of how they were generated)."""
    buys = _purchases(evs)
    since = instant_of(buys[-1]) - timedelta(days=90)
    recent = [e for e in evs if instant_of(e) >= since]
    seen = set()
    if all(b.get("discount") for b in buys[-2:]):
        seen.add("discount_switch")
    unresolved = Counter(e["reason"] for e in recent if e["type"] == "call" and not e["resolved"])
    final: dict[str, dict] = {}
    for e in recent:
        kind = e["type"]
        if kind == "complaint":
            final[e["complaint_id"]] = e
        elif kind == "call":
            if e["reason"] == "price":
                seen.add("price_call")
            if e["reason"] == "product" and e["resolved"]:
                seen.add("product_call")
            if e.get("wait_s", 0) >= 300:
                seen.add("long_waits")
            if not e["resolved"]:
                seen.add("repeated_calls" if unresolved[e["reason"]] > 1 else "unresolved_calls")
        elif kind == "refund":
            if e["reason"] == "price":
                seen.add("price_refund")
            if e["reason"] in ("defective", "not_as_described"):
                seen.add("defect_refund")
        elif kind == "survey":
            if e["satisfaction"] == "dissatisfied":
                seen.add("dissatisfied_survey")
            if e["satisfaction"] == "very_dissatisfied":
                seen.add("very_dissatisfied_survey")
        elif kind == "account":
            change = e["change"]
            seen.add("relocation" if change in ("moved", "life_event") else change)
    for c in final.values():
        if c["category"] == "price":
            seen.add("price_complaint")
        if c["category"] == "product":
            seen.add("product_complaint")
        if c["category"] == "service" and c["status"] in ("open", "rejected"):
            seen.add("service_complaint_unresolved")
    return seen


def test_defectors_show_exactly_two_of_their_types_signals_and_none_of_another_type(lives):
    every = {s for names in SIGNALS.values() for s in names}
    pairs = Counter()
    for t, evs in _of(lives, *DEFECTORS):
        seen = _signals_seen(evs)
        assert seen <= every
        assert len(t.signals) == 2 and set(t.signals) <= set(SIGNALS[t.archetype])
        assert seen == set(t.signals), (t.customer_id, t.archetype, seen)
        pairs[frozenset(t.signals)] += 1
    assert len(pairs) >= 12  # the pairs vary


def test_the_signal_reader_sees_nothing_in_silent_leavers_and_one_offs(lives):
    for _, evs in _of(lives, "silent_leaver", "one_off"):
        assert _signals_seen(evs) <= {"discount_switch"}  # a sale is not a signal alone


def test_defectors_stop_buying_between_30_and_65_percent_of_the_period(lives):
    for t, evs in _of(lives, *DEFECTORS):
        last = instant_of(_purchases(evs)[-1])
        assert START + timedelta(days=0.3 * 730) <= last <= START + timedelta(days=0.65 * 730)
        assert len(_purchases(evs)) >= 6
        assert (t.stage, t.defection, t.alerted) == ("churned", t.archetype, True)


def test_price_defectors_who_switch_to_discounts_bought_at_full_price_before(lives):
    switched = [(t, evs) for t, evs in _of(lives, "price") if "discount_switch" in t.signals]
    assert switched
    for _, evs in switched:
        buys = _purchases(evs)
        since = instant_of(buys[-1]) - timedelta(days=90)
        assert not any(b.get("discount") for b in buys if instant_of(b) < since)


def test_wobblers_fall_silent_once_for_four_to_six_gaps_then_come_back(lives):
    for t, evs in _of(lives, "wobbler"):
        times = [instant_of(b) for b in _purchases(evs)]
        gaps = [(b - a).total_seconds() / 86_400 for a, b in itertools.pairwise(times)]
        typical = statistics.median(gaps)
        longest = max(gaps)
        assert 3.0 * typical < longest < 8 * typical  # gamma gaps around it blur 4-6
        assert times[gaps.index(longest)] > START + timedelta(days=365 - 1)
        assert times[-1] > END - timedelta(days=90)
        assert (t.stage, t.alerted) == ("active", False)


def test_truth_round_trips_through_json(stream):
    for t in stream[1][:50]:
        assert Truth(**orjson.loads(orjson.dumps(t.__dict__))) == t


# -- the evaluator, on hand-built decisions ---------------------------------------------


def _truth(cid: str, archetype: str, stage: str, defection: str | None = None) -> Truth:
    return Truth(
        cid,
        archetype,
        stage,
        defection,
        defection is not None,
        "2024-06-01T00:00:00Z",
        stream="behaviour",
    )


def _population():
    """50 stayers, 4 defectors of each type, 10 silent leavers, 2 wobblers."""
    truths = [
        _truth(
            f"s{i}",
            ("loyal", "irregular", "discount_loyal")[i % 3],
            "stability" if i % 3 != 1 else "active",
        )
        for i in range(50)
    ]
    truths += [_truth(f"p{i}", "price", "churned", "price") for i in range(4)]
    truths += [_truth(f"q{i}", "product", "churned", "product") for i in range(4)]
    truths += [_truth(f"v{i}", "service", "churned", "service") for i in range(4)]
    truths += [_truth(f"x{i}", "self_change", "churned", "self_change") for i in range(4)]
    truths += [_truth(f"u{i}", "silent_leaver", "churned", "unknown") for i in range(10)]
    truths += [_truth(f"w{i}", "wobbler", "active") for i in range(2)]
    return truths


def _right(truths) -> Decisions:
    states = {
        t.customer_id: ("stability" if t.stage == "active" else t.stage, t.defection or "")
        for t in truths
    }
    alerts = [(t.customer_id, "churned", 5_000) for t in truths if t.stage == "churned"]
    return Decisions(states, alerts, [("2024-05-01 silence",)] * len(alerts))


def _with(d: Decisions, states=None, alerts=()) -> Decisions:
    s = {**d.states, **(states or {})}
    extra = list(alerts)
    return Decisions(
        s, d.alerts + [a for a, _ in extra], (d.evidence or []) + [ev for _, ev in extra]
    )


def test_right_decisions_meet_the_behaviour_targets():
    r = evaluate(_population(), _right(_population()))
    assert r.stream == "behaviour"
    assert r.stayers == 50 and r.stayers_alarmed == 0
    assert r.stage_accuracy == 1.0 and r.churned_precision == r.churned_recall == 1.0
    assert r.silent_unknown == 1.0
    assert r.churn_risk_without_evidence == 0
    assert r.meets_targets(), [c for c in r.checks() if not c[2]]


def test_one_false_alarm_among_50_stayers_gives_2_percent_and_two_fail_the_3_percent_target():
    truths = _population()
    one = _with(_right(truths), alerts=[(("s0", "churn_risk", 9), ("evidence",))])
    r = evaluate(truths, one)
    assert r.stayers_alarmed_rate == pytest.approx(0.02)
    assert r.alarmed["loyal"] == (1, 17)
    assert r.meets_targets()
    two = _with(one, alerts=[(("s1", "decline", 9), ())])
    r = evaluate(truths, two)
    assert r.stayers_alarmed_rate == pytest.approx(0.04)
    assert not r.meets_targets()


def test_a_recovered_alert_is_not_an_alarm():
    truths = _population()
    r = evaluate(truths, _with(_right(truths), alerts=[(("s0", "recovered", 9), ())]))
    assert r.stayers_alarmed == 0


def test_truth_stage_active_accepts_exploration_formation_and_stability_but_not_decline():
    truths = _population()
    active = [t.customer_id for t in truths if t.stage == "active"]
    states = dict(
        zip(active, [("exploration", ""), ("formation", ""), ("stability", "")] * 20, strict=False)
    )
    r = evaluate(truths, _with(_right(truths), states=states))
    assert r.stage_accuracy == 1.0
    r = evaluate(truths, _with(_right(truths), states={active[0]: ("decline", "unknown")}))
    assert r.stage_accuracy == pytest.approx(1 - 1 / len(truths))
    assert r.stage_confusion["active"]["decline"] == 1


def test_a_truth_of_stability_does_not_accept_formation():
    truths = _population()
    r = evaluate(truths, _with(_right(truths), states={"s0": ("formation", "")}))
    assert r.stage_accuracy == pytest.approx(1 - 1 / len(truths))
    assert r.stage_by_archetype["loyal"] == pytest.approx(16 / 17)


def test_per_type_precision_and_recall_on_a_known_confusion():
    truths = _population()
    # one price defector typed unknown, one product defector typed price
    d = _with(_right(truths), states={"p0": ("churned", "unknown"), "q0": ("churned", "price")})
    r = evaluate(truths, d)
    assert r.per_type["price"]["precision"] == pytest.approx(3 / 4)
    assert r.per_type["price"]["recall"] == pytest.approx(3 / 4)
    assert r.per_type["product"]["precision"] == 1.0
    assert r.per_type["product"]["recall"] == pytest.approx(3 / 4)
    assert not r.meets_targets()


def test_churned_precision_and_recall_do_not_count_decline_as_churned():
    truths = _population()
    d = _with(_right(truths), states={"u0": ("decline", "unknown"), "s3": ("churned", "unknown")})
    r = evaluate(truths, d)
    assert r.churned_recall == pytest.approx(25 / 26)
    assert r.churned_precision == pytest.approx(25 / 26)
    assert r.silent_unknown == 1.0  # decline with type unknown is still typed unknown


def test_silent_leavers_typed_with_a_reason_lower_the_unknown_share():
    truths = _population()
    d = _with(_right(truths), states={"u0": ("churned", "price"), "u1": ("stability", "")})
    r = evaluate(truths, d)
    assert r.silent_unknown == pytest.approx(0.8)
    assert r.per_type["price"]["precision"] == pytest.approx(4 / 5)


def test_churn_risk_alerts_without_evidence_are_counted_and_fail_the_targets():
    truths = _population()
    d = _with(
        _right(truths),
        alerts=[
            (("p0", "churn_risk", 1), ("2024-05-01 call:price",)),
            (("p1", "churn_risk", 1), ()),
        ],
    )
    r = evaluate(truths, d)
    assert (r.churn_risk_alerts, r.churn_risk_without_evidence) == (2, 1)
    assert not r.meets_targets()


def test_decisions_without_recorded_evidence_cannot_meet_the_evidence_target():
    truths = _population()
    d = _right(truths)
    r = evaluate(truths, Decisions(d.states, d.alerts))
    assert r.churn_risk_without_evidence is None
    assert not r.meets_targets()


def test_wobblers_alarmed_then_recovered_are_counted_apart_from_those_never_recovered():
    truths = _population()
    d = _with(
        _right(truths),
        alerts=[
            (("w0", "decline", 10), ()),
            (("w0", "recovered", 20), ()),
            (("w1", "decline", 10), ()),
        ],
    )
    r = evaluate(truths, d)
    assert r.wobblers_recovered == pytest.approx(0.5)
    assert r.wobblers_unrecovered == pytest.approx(0.5)
    assert r.stayers_alarmed == 0  # wobblers are not in the stay target
    assert r.alarmed["wobbler"] == (2, 2)


def test_the_rules_stream_keeps_its_own_targets():
    truths = [
        Truth(f"l{i}", "loyal", "stability", None, False, "2024-06-01T00:00:00Z") for i in range(40)
    ]
    d = Decisions({t.customer_id: ("stability", "") for t in truths}, [("l0", "churn_risk", 1)])
    r = evaluate(truths, d)
    assert r.stream == "rules"
    assert [c[0] for c in r.checks()][-1] == "loyal alerted"
    assert not r.meets_targets()  # 2.5% of loyal alerted: over the rules stream's 2%


def test_decisions_equal_ignores_alert_times_and_order_but_not_kinds_or_stages():
    a = Decisions(
        {"c1": ("stability", ""), "c2": ("churned", "price")},
        [("c2", "decline", 1), ("c2", "churned", 2)],
    )
    b = Decisions(dict(a.states), [("c2", "churned", 7), ("c2", "decline", 5)])
    assert decisions_equal(a, b)
    c = Decisions(dict(a.states), [("c2", "churned", 2)])
    assert not decisions_equal(a, c)
    assert decisions_diff(a, c)["alerts_only_in_a"] == [("c2", "decline")]
    e = Decisions({**a.states, "c1": ("formation", "")}, a.alerts)
    assert decisions_diff(a, e)["states"] == {"c1": (("stability", ""), ("formation", ""))}


# -- the pipeline over the stream -------------------------------------------------------


@pytest.fixture(scope="module")
def small_run():
    events, truths = simulate_behaviour(240, seed=8)
    return events, truths, run_in_process(events)


def test_the_pipeline_reads_every_customer_and_records_each_alerts_evidence(small_run):
    _events, truths, d = small_run
    assert set(d.states) == {t.customer_id for t in truths}
    assert d.evidence is not None and len(d.evidence) == len(d.alerts)
    report = evaluate(truths, d)
    assert report.stream == "behaviour" and report.stayers > 0


def test_the_pipeline_decides_the_same_in_order_and_shuffled_within_30_minutes_with_duplicates(
    small_run,
):
    events, _, in_order = small_run
    arrived = list(disorder(events, shuffle_s=1800, duplicate_rate=0.03))
    assert len(arrived) > len(events)
    shuffled = run_in_process(arrived)
    assert decisions_diff(in_order, shuffled) == {
        "states": {},
        "alerts_only_in_a": [],
        "alerts_only_in_b": [],
    }
    assert decisions_equal(in_order, shuffled)


def test_the_cli_writes_the_behaviour_stream_and_scores_it(tmp_path):
    from typer.testing import CliRunner

    from touchstream.cli import app

    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    runner = CliRunner()
    made = runner.invoke(
        app,
        [
            "simulate",
            "--kind",
            "behaviour",
            "--customers",
            "100",
            "--out",
            str(out),
            "--truth",
            str(truth),
        ],
    )
    assert made.exit_code == 0, made.output
    rows = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert {r["stream"] for r in rows} == {"behaviour"} and len(rows) == 100
    scored = runner.invoke(app, ["evaluate", "--truth", str(truth), "--events", str(out)])
    assert "stayers alarmed" in scored.output
    assert scored.exit_code in (0, 1)  # 1: targets not met


def _cmp(i: int, iso: str, status: str, cid: str = "c1") -> dict:
    return {
        "event_id": f"k{i}",
        "customer_id": cid,
        "type": "complaint",
        "occurred_at": iso,
        "complaint_id": "9",
        "category": "product",
        "severity": 2,
        "status": status,
    }


def _call(i: int, iso: str, resolved: bool, reason: str = "billing") -> dict:
    return {
        "specversion": "1.0",
        "id": f"k{i}",
        "source": "callcenter",
        "type": "com.touchstream.call",
        "subject": "c1",
        "time": iso,
        "data": {"direction": "inbound", "reason": reason, "duration_s": 60, "resolved": resolved},
    }


def _at(iso: str) -> int:
    return int(instant_of({"occurred_at": iso}).timestamp() * 1000)


def test_open_issues_follow_a_complaint_until_it_is_resolved_and_reopened():
    events = [
        _cmp(1, "2024-03-01T10:00:00+02:00", "open"),
        _cmp(2, "2024-03-02T10:00:00Z", "resolved"),
        _cmp(3, "2024-03-05T10:00:00Z", "open"),
    ]
    assert open_issues(events, "c1", _at("2024-03-01T09:00:00Z")) == ["complaint 9 open"]
    assert open_issues(events, "c1", _at("2024-03-03T00:00:00Z")) == []
    assert open_issues(events, "c1", _at("2024-03-06T00:00:00Z")) == ["complaint 9 open"]
    assert open_issues(events, "other", _at("2024-03-06T00:00:00Z")) == []


def test_open_issues_keep_an_unresolved_call_until_a_resolved_one_about_it_or_30_days():
    events = [
        _call(1, "2024-03-01T10:00:00Z", False),
        _call(2, "2024-03-02T10:00:00Z", False, reason="product"),
        _call(3, "2024-03-04T10:00:00-05:00", True),
    ]
    assert open_issues(events, "c1", _at("2024-03-03T00:00:00Z")) == [
        "call about billing unresolved",
        "call about product unresolved",
    ]
    assert open_issues(events, "c1", _at("2024-03-05T00:00:00Z")) == [
        "call about product unresolved"
    ]
    assert open_issues(events, "c1", _at("2024-04-05T00:00:00Z")) == []


def test_churn_risk_raised_when_nothing_is_open_is_counted_from_the_events():
    truths = _population()
    events = [
        _cmp(1, "2024-03-01T10:00:00Z", "open", cid="s0"),
        _cmp(2, "2024-03-02T10:00:00Z", "resolved", cid="s0"),
    ]
    d = _with(
        _right(truths),
        alerts=[
            (("s0", "churn_risk", _at("2024-03-01T10:00:00Z")), ("x",)),
            (("s0", "churn_risk", _at("2024-03-02T10:00:00Z")), ("x",)),
        ],
    )
    assert evaluate(truths, d).churn_risk_nothing_open is None
    r = evaluate(truths, d, events)
    assert (r.churn_risk_alerts, r.churn_risk_nothing_open) == (2, 1)


class _Sink:
    database = "ts"

    def __init__(self) -> None:
        self.sql: list[str] = []

    def query(self, sql: str):
        self.sql.append(sql)
        if "customer_state" in sql:
            return None, [("c1", "churned", "price")]
        return None, [
            ("c1", "churn_risk", 1_700_000_000, '["2024-01-02 call:price"]'),
            ("c1", "churned", 1_700_000_100, "[]"),
        ]


def test_decisions_from_clickhouse_carry_each_alerts_evidence():
    sink = _Sink()
    d = from_clickhouse(sink)
    assert d.states == {"c1": ("churned", "price")}
    assert d.alerts == [
        ("c1", "churn_risk", 1_700_000_000_000),
        ("c1", "churned", 1_700_000_100_000),
    ]
    assert d.evidence == [("2024-01-02 call:price",), ()]
    assert "evidence" in sink.sql[1] and "ts.alerts FINAL" in sink.sql[1]
