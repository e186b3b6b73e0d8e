"""The analysts' views (sinks/views.py) on ClickHouse 18.16 and on chdb, against data
whose answers are worked out by hand in the comments, and against the domain's own
Python (scores, segments, flags) on a generated population."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest

from agents.processor import Processor
from agents.records import RawMessage
from schemas.events import epoch_ms
from sinks import Sink, open_sink
from sinks.rows import cutoffs_row
from sinks.tables import BY_NAME
from touchstream.domain import scoring
from touchstream.domain.codec import decode
from touchstream.domain.scoring import cutoffs_from, medians_from
from touchstream.local_servers import ClickHouseServer

pytestmark = pytest.mark.integration

AS_OF = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


def at(day: str, hour: int = 12) -> str:
    return f"{day}T{hour:02d}:00:00Z"


def ms(day: str, hour: int = 0) -> int:
    return epoch_ms(datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00"))


class Events:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def add(self, cid: str, type_: str, when: str, **fields: Any) -> None:
        self.items.append(
            {
                "event_id": f"e{len(self.items)}",
                "customer_id": cid,
                "type": type_,
                "occurred_at": when,
                **fields,
            }
        )

    def buy(self, cid: str, day: str, amount: str, hour: int = 12) -> None:
        self.add(cid, "purchase", at(day, hour), amount=amount, currency="EUR")

    def complaint(self, cid: str, cmp: str, day: str, status: str) -> None:
        self.add(
            cid,
            "complaint",
            at(day),
            complaint_id=cmp,
            category="service",
            severity=3,
            status=status,
        )

    def survey(self, cid: str, day: str, level: str) -> None:
        self.add(cid, "survey", at(day), satisfaction=level)


def processed(
    events: list[dict[str, Any]],
) -> tuple[dict[str, list[tuple]], Processor, dict[str, bytes]]:
    """The real batch pipeline over the events, in time order (one partition)."""
    table: dict[str, bytes] = {}
    proc = Processor()
    ordered = sorted(events, key=lambda e: e["occurred_at"])
    msgs = [
        RawMessage("in", 0, i, e["customer_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(ordered)
    ]
    result = proc.process(msgs, table.get, AS_OF)
    table.update(result.states)
    return result.rows, proc, table


def row(table: str, **values: Any) -> tuple:
    """A row of ``table`` with the given columns, every other column its empty value."""
    empty = {
        "String": "",
        "UInt8": 0,
        "UInt16": 0,
        "UInt32": 0,
        "UInt64": 0,
        "Float64": 0.0,
        "Decimal(18, 4)": Decimal(0),
        "DateTime('UTC')": 0,
    }
    cols = BY_NAME[table].columns
    unknown = set(values) - {c for c, _ in cols}
    assert not unknown, unknown
    return tuple(
        values[c] if c in values else (None if t.startswith("Nullable") else empty[t])
        for c, t in cols
    )


def override(rows: list[tuple], cid: str, **values: Any) -> list[tuple]:
    names = BY_NAME["customer_state"].column_names
    out = []
    for r in rows:
        if r[0] == cid:
            r = tuple(values.get(c, v) for c, v in zip(names, r, strict=True))
        out.append(r)
    return out


def shop_events() -> list[dict[str, Any]]:
    e = Events()
    e.buy("c1", "2024-01-05", "100")
    e.buy("c1", "2024-02-10", "50")
    e.buy("c1", "2024-03-02", "30")
    e.buy("c1", "2024-03-15", "20")
    e.buy("c1", "2024-03-15", "5", hour=18)  # the same purchase day: one visit
    e.survey("c1", "2024-02-20", "very_satisfied")
    e.survey("c1", "2024-03-05", "satisfied")
    e.buy("c2", "2024-01-20", "200")
    e.complaint("c2", "k2", "2024-01-25", "open")
    e.add(
        "c2",
        "complaint",
        "2024-01-26T10:00:00Z",
        complaint_id="k2",
        category="service",
        severity=3,
        status="resolved",
    )  # within a day: resolved quickly
    e.survey("c2", "2024-03-01", "very_dissatisfied")
    e.buy("c3", "2024-02-01", "10")
    e.buy("c3", "2024-02-01", "5", hour=15)
    e.complaint("c3", "k3", "2024-02-05", "open")
    e.complaint("c3", "k3", "2024-02-20", "resolved")  # after 15 days: resolved
    e.buy("c3", "2024-03-10", "40")  # bought again after the complaint
    e.add("c3", "refund", at("2024-03-11"), amount="15", reason="defective")
    e.buy("c4", "2024-03-05", "70")
    e.complaint("c4", "k4", "2024-03-06", "open")  # unresolved, nothing bought since
    e.survey("c5", "2024-03-02", "neutral")  # never bought
    e.complaint("c6", "k6", "2024-01-02", "open")  # complained before buying at all
    e.buy("c6", "2024-01-10", "10")
    e.buy("c7", "2024-01-03", "30")
    e.complaint("c7", "k7", "2024-01-04", "open")
    e.complaint("c7", "k7", "2024-01-05", "resolved")
    e.buy("c7", "2024-02-15", "25")
    return e.items


def lifecycle_rows() -> list[tuple]:
    """Transitions of six other customers (t1..t6), their stays in days in comments."""

    def t(
        cid: str, seq: int, day: str, frm: str, to: str, rel: int = 1, pattern: str = ""
    ) -> tuple:
        return row(
            "transitions",
            customer_id=cid,
            seq=seq,
            at=ms(day),
            from_stage=frm,
            to_stage=to,
            relationship=rel,
            pattern=pattern,
            version=seq,
        )

    return [
        # exploration 10, formation 30, stability ongoing (39.5 to stream time)
        t("t1", 0, "2024-01-01", "", "exploration"),
        t("t1", 1, "2024-01-11", "exploration", "formation"),
        t("t1", 2, "2024-02-10", "formation", "stability"),
        # exploration 30, decline 30, churned ongoing (19.5): early abortion
        t("t2", 0, "2024-01-01", "", "exploration"),
        t("t2", 1, "2024-01-31", "exploration", "decline"),
        t("t2", 2, "2024-03-01", "decline", "churned", pattern="early_abortion"),
        # exploration 5, formation 30, decline 30, churned 4, then a second relationship
        t("t3", 0, "2024-01-01", "", "exploration"),
        t("t3", 1, "2024-01-06", "exploration", "formation"),
        t("t3", 2, "2024-02-05", "formation", "decline"),
        t("t3", 3, "2024-03-06", "decline", "churned", pattern="mid_way_death"),
        t("t3", 4, "2024-03-10", "churned", "exploration", rel=2),  # ongoing 10.5
        # exploration 21, formation 9, stability 30, decline 10, churned ongoing (9.5)
        t("t4", 0, "2024-01-01", "", "exploration"),
        t("t4", 1, "2024-01-22", "exploration", "formation"),
        t("t4", 2, "2024-01-31", "formation", "stability"),
        t("t4", 3, "2024-03-01", "stability", "decline"),
        t("t4", 4, "2024-03-11", "decline", "churned", pattern="premature_exit"),
        t("t5", 0, "2024-03-15", "", "exploration"),  # ongoing 5.5
        # exploration 15, formation ongoing (64.5)
        t("t6", 0, "2024-01-01", "", "exploration"),
        t("t6", 1, "2024-01-16", "exploration", "formation"),
    ]


def alert_rows() -> list[tuple]:
    def a(
        cid: str,
        day: str,
        kind: str,
        episode: int,
        dtype: str,
        net: str,
        severity: int,
        label: str,
        evidence: list[str],
    ) -> tuple:
        return row(
            "alerts",
            alert_id=f"{cid}/{episode}/{kind}",
            customer_id=cid,
            at=ms(day),
            kind=kind,
            episode=episode,
            defection_type=dtype,
            net_spend=Decimal(net),
            severity=severity,
            severity_label=label,
            evidence=orjson.dumps(evidence).decode(),
            message=f"{cid} {kind}",
            version=1,
        )

    return [
        a("c1", "2024-03-03", "churn_risk", 1, "service", "205", 2, "medium", ["c1 risk"]),
        a("c1", "2024-03-15", "recovered", 1, "unknown", "205", 2, "medium", []),
        a(
            "c2",
            "2024-03-05",
            "decline",
            1,
            "service",
            "200",
            2,
            "medium",
            ["2024-01-25 complaint:service:3 resolved after 1 days"],
        ),
        a("c6", "2024-02-20", "decline", 1, "unknown", "10", 1, "low", []),
        a("c6", "2024-03-18", "churned", 1, "unknown", "10", 1, "low", ["c6 silent"]),
    ]


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One chdb directory for the module (chdb opens one per process), a database each."""
    return str(tmp_path_factory.mktemp("views") / "chdb")


def sink_url(request: pytest.FixtureRequest, db: str) -> str:
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse")
        return server.url(db)
    return f"chdb://{request.getfixturevalue('chdb_dir')}?database={db}"


@pytest.fixture(scope="module", params=["server", "chdb"])
def shop(request: pytest.FixtureRequest) -> Iterator[Sink]:
    url = sink_url(request, f"views_{uuid.uuid4().hex[:8]}")
    rows, _, _ = processed(shop_events())
    states = override(rows["customer_state"], "c2", stage="decline", alert_level=2)
    states = override(states, "c6", stage="churned", alert_level=3)
    with open_sink(url) as sink:
        sink.migrate()
        sink.insert("events", rows["events"])
        sink.insert("customer_state", states)
        sink.insert("transitions", lifecycle_rows())
        sink.insert("alerts", alert_rows())
        sink.insert(
            "stream_clock",
            [(0, epoch_ms(AS_OF), epoch_ms(AS_OF)), (1, ms("2024-03-18"), ms("2024-03-18"))],
        )
        yield sink


def select(sink: Sink, sql: str) -> list[tuple]:
    _, rows = sink.query(sql.format(db=sink.database))
    return [tuple(_plain(v) for v in r) for r in rows]


def _plain(v: Any) -> Any:
    """Values as both sinks give them, made alike: numbers as float, dates as text."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, Decimal | float):
        return float(v)
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, date):
        return v.isoformat()
    return v


def test_the_profile_shows_this_months_visits_and_spend_in_stream_time(shop: Sink) -> None:
    rows = select(
        shop,
        "SELECT customer_id, month, visits_this_month, spend_this_month, "
        "purchases, complaint_outcome, toString(as_of) "
        "FROM {db}.customer_profile ORDER BY customer_id",
    )
    assert rows == [
        # March 2024 is the month of stream time (2024-03-20 12:00): c1 came on the 2nd and
        # the 15th (twice that day: one visit) for 30 + 20 + 5.
        ("c1", "2024-03-01", 2, 55.0, 5, "none", "2024-03-20 12:00:00"),
        ("c2", "2024-03-01", 0, 0.0, 1, "resolved_quickly", "2024-03-20 12:00:00"),
        # a refund is not a visit and does not lower the month's spend
        ("c3", "2024-03-01", 1, 40.0, 3, "resolved", "2024-03-20 12:00:00"),
        ("c4", "2024-03-01", 1, 70.0, 1, "unresolved", "2024-03-20 12:00:00"),
        ("c5", "2024-03-01", 0, 0.0, 0, "none", "2024-03-20 12:00:00"),
        ("c6", "2024-03-01", 0, 0.0, 1, "unresolved", "2024-03-20 12:00:00"),
        ("c7", "2024-03-01", 0, 0.0, 2, "resolved_quickly", "2024-03-20 12:00:00"),
    ]


def test_the_profile_names_the_open_alert_and_the_latest_alerts_evidence(shop: Sink) -> None:
    rows = select(
        shop,
        "SELECT customer_id, open_alert, open_alert_severity, "
        "open_alert_severity_label, latest_alert, evidence "
        "FROM {db}.customer_profile WHERE customer_id IN ('c1', 'c2', 'c4', "
        "'c6') ORDER BY customer_id",
    )
    assert rows == [
        ("c1", "", 0, "", "recovered", "[]"),  # the episode closed: nothing open
        (
            "c2",
            "decline",
            2,
            "medium",
            "decline",
            '["2024-01-25 complaint:service:3 resolved after 1 days"]',
        ),
        ("c4", "", 0, "", "", ""),  # never alerted
        ("c6", "churned", 1, "low", "churned", '["c6 silent"]'),
    ]


def test_the_profile_carries_every_customer_state_column_and_the_scores(shop: Sink) -> None:
    from sinks.views import PROFILE_SCORE_COLUMNS

    cols, _ = shop.query(f"SELECT * FROM {shop.database}.customer_profile LIMIT 1")
    assert cols[: len(BY_NAME["customer_state"].columns)] == list(
        BY_NAME["customer_state"].column_names
    )
    assert set(PROFILE_SCORE_COLUMNS) <= set(cols)


def test_segments_month_by_month_are_scored_against_that_months_population(shop: Sink) -> None:
    rows = select(
        shop,
        "SELECT month, segment, customers, buyers, revenue "
        "FROM {db}.segment_monthly ORDER BY month, segment",
    )
    assert rows == [
        # end of January: c7 (3rd), c1 (5th), c6 (10th), c2 (20th), one purchase day each:
        # R cut-offs above the 1st, 2nd, 3rd and 4th last days -> R 1, 2, 3, 4; F 1.
        ("2024-01-01", "about_to_sleep", 1, 1, 10.0),  # c6
        ("2024-01-01", "hibernating", 2, 2, 130.0),  # c7 (R1) 30, c1 (R2) 100
        ("2024-01-01", "promising", 1, 1, 200.0),  # c2 (R4)
        # end of February: last days c6 Jan 10, c2 Jan 20, c3 Feb 1, c1 Feb 10, c7 Feb 15
        # -> R 1..5; c1 and c7 have 2 purchase days -> F 4, the others F 1.
        ("2024-02-01", "about_to_sleep", 1, 1, 15.0),  # c3 R3 F1
        ("2024-02-01", "champions", 1, 1, 25.0),  # c7 R5 F4
        ("2024-02-01", "hibernating", 2, 0, 0.0),  # c6 R1, c2 R2
        ("2024-02-01", "loyal", 1, 1, 50.0),  # c1 R4 F4
        # stream time (Mar 20): last days c6, c2, c7 Feb 15, c4 Mar 5, c3 Mar 10, c1 Mar 15
        # -> R 1, 1, 2, 3, 4, 5; purchase days 1, 1, 2, 1, 2, 4 -> F 1, 1, 3, 1, 3, 5.
        ("2024-03-01", "about_to_sleep", 1, 1, 70.0),  # c4
        ("2024-03-01", "at_risk", 1, 0, 0.0),  # c7
        ("2024-03-01", "champions", 1, 1, 55.0),  # c1
        ("2024-03-01", "hibernating", 2, 0, 0.0),  # c6, c2
        ("2024-03-01", "potential_loyalists", 1, 1, 25.0),  # c3: 40 bought, 15 refunded
    ]


def test_the_lifecycle_funnel_counts_relationships_reaching_each_stage(shop: Sink) -> None:
    assert select(shop, "SELECT * FROM {db}.lifecycle_funnel") == [
        ("exploration", 6, 7, 100.0),  # t1..t6; t3 twice (reactivated): 7 relationships
        ("formation", 4, 4, 57.1),  # t1, t3, t4, t6 of 7
        ("stability", 2, 2, 28.6),  # t1, t4
        ("decline", 3, 3, 42.9),  # t2, t3, t4
        ("churned", 3, 3, 42.9),
    ]


def test_stage_durations_measure_completed_stays_and_ongoing_ones_to_stream_time(
    shop: Sink,
) -> None:
    assert select(shop, "SELECT * FROM {db}.stage_durations") == [
        # completed: 10, 30, 5, 21, 15 days; ongoing: t3's second (10.5), t5 (5.5)
        ("exploration", 5, 16.2, 15.0, 30.0, 2, 10.5),
        ("formation", 3, 23.0, 30.0, 30.0, 1, 64.5),  # 30, 30, 9; t6 ongoing
        ("stability", 1, 30.0, 30.0, 30.0, 1, 39.5),  # t4; t1 ongoing
        ("decline", 3, 23.3, 30.0, 30.0, 0, 0.0),  # 30, 30, 10
        ("churned", 1, 4.0, 4.0, 4.0, 2, 19.5),  # t3 reactivated; t2 (19.5), t4 (9.5)
    ]


def test_the_exit_pattern_mix_puts_long_term_retention_beside_the_ended_ones(
    shop: Sink,
) -> None:
    assert select(shop, "SELECT * FROM {db}.exit_patterns") == [
        ("early_abortion", 1, 25.0),
        ("mid_way_death", 1, 25.0),
        ("premature_exit", 1, 25.0),
        ("long_term_retention", 1, 25.0),  # t1, still in stability
    ]


def test_defections_are_counted_by_month_type_and_the_segment_the_month_began_in(
    shop: Sink,
) -> None:
    assert select(
        shop,
        "SELECT month, segment, kind, defection_type, alerts, net_spend "
        "FROM {db}.defection_monthly",
    ) == [
        ("2024-02-01", "about_to_sleep", "decline", "unknown", 1, 10.0),  # c6 at end of Jan
        ("2024-03-01", "hibernating", "churned", "unknown", 1, 10.0),  # c6 at end of Feb
        ("2024-03-01", "hibernating", "decline", "service", 1, 200.0),  # c2 at end of Feb
    ]


def test_retention_is_the_share_of_each_first_purchase_cohort_buying_n_months_later(
    shop: Sink,
) -> None:
    assert select(shop, "SELECT * FROM {db}.retention_cohorts") == [
        ("2024-01-01", 0, 4, 4, 100.0),  # c1, c2, c6, c7
        ("2024-01-01", 1, 4, 2, 50.0),  # c1, c7 in February
        ("2024-01-01", 2, 4, 1, 25.0),  # c1 in March
        ("2024-02-01", 0, 1, 1, 100.0),  # c3
        ("2024-02-01", 1, 1, 1, 100.0),
        ("2024-03-01", 0, 1, 1, 100.0),  # c4
    ]


def test_csm_is_the_mean_item_score_per_month_and_segment(shop: Sink) -> None:
    assert select(shop, "SELECT * FROM {db}.satisfaction_monthly") == [
        ("2024-02-01", "hibernating", 1, 1, 90, 90.0),  # c1 (hibernating at end of Jan)
        ("2024-03-01", "(none yet)", 1, 1, 0, 0.0),  # c5 never bought
        ("2024-03-01", "hibernating", 1, 1, -90, -90.0),  # c2
        ("2024-03-01", "loyal", 1, 1, 60, 60.0),  # c1 (loyal at end of Feb)
    ]


def test_repurchase_after_a_complaint_is_counted_by_its_outcome(shop: Sink) -> None:
    assert select(shop, "SELECT * FROM {db}.complaint_repurchase") == [
        ("none", 1, 1, 100.0),  # c1 bought on four days (c5 never bought)
        ("unresolved", 1, 0, 0.0),  # c4; c6 complained before its first purchase
        ("resolved", 1, 1, 100.0),  # c3 bought on Mar 10, after Feb 5
        ("resolved_quickly", 2, 1, 50.0),  # c7 came back, c2 did not
    ]


def test_views_are_replaced_only_when_their_definition_changes(shop: Sink) -> None:
    again = shop.migrate()
    if shop.replaces_views():  # chdb, current servers: replaced in place, never dropped
        assert not [s for s in again if s.startswith(("DROP", "RENAME"))]
        assert any(
            s.startswith(f"CREATE OR REPLACE VIEW {shop.database}.customer_profile") for s in again
        )
    else:  # 18.16: an unchanged view is left alone
        assert not [s for s in again if "VIEW" in s or s.startswith(("DROP", "RENAME"))]
    vip = shop.migrate([["vip"] * 5 for _ in range(5)])
    assert select(shop, "SELECT DISTINCT segment FROM {db}.segment_monthly") == [("vip",)]
    if not shop.replaces_views():
        swapped = {s.split(".")[-1] for s in vip if s.startswith("RENAME")}
        # the views that carry the segment map, and no other
        assert swapped == {
            "customer_scores",
            "segment_monthly",
            "defection_monthly",
            "satisfaction_monthly",
        }
    shop.migrate()  # back to the default map for the other tests


# -- scores, flags and the value matrix against the domain's Python --------------------


def population_events(n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    e = Events()
    start = date(2022, 6, 1)
    for i in range(n):
        first = start + timedelta(days=rnd.randrange(0, 600))
        for k in range(rnd.choice([1, 1, 2, 3, 4, 6, 9])):
            day = first + timedelta(days=k * rnd.randrange(5, 120))
            if day <= AS_OF.date():
                e.buy(f"p{i:03d}", day.isoformat(), f"{rnd.randrange(5, 900)}.{k}0")
        if rnd.random() < 0.2:
            e.add(f"p{i:03d}", "refund", at(first.isoformat(), 18), amount="3", reason="price")
    return e.items


def population_data(n: int = 120, seed: int = 7) -> tuple[dict[str, list[tuple]], dict[str, tuple]]:
    """A generated population's rows (with stream_clock and rfm_cutoffs) and, per buyer,
    the scores, segment, quadrant and flags the domain's Python gives it."""
    rows, proc, table = processed(population_events(n, seed))
    pop = proc.population()
    cut = cutoffs_from(pop)
    rate_median, amount_median = medians_from(pop)
    as_of = epoch_ms(AS_OF)
    expected = {}
    for cid, raw in table.items():
        state = decode(raw)[0]
        p = scoring.point_of(state)
        if p is None:
            continue
        r, f, m = cut.scores(p)
        tenure = as_of // 86_400_000 - p.first_day
        expected[cid] = (
            r,
            f,
            m,
            scoring.segment(r, f),
            scoring.behaviour_quadrant(p.rate, p.amount, rate_median, amount_median),
            int(
                scoring.is_key_account(
                    m, tenure, p.purchase_days, state.stage in ("decline", "churned")
                )
            ),
            int(scoring.is_transaction_buyer(p.purchase_days, tenure)),
        )
    rows["stream_clock"] = [(0, as_of, as_of)]
    rows["rfm_cutoffs"] = [cutoffs_row(cut, rate_median, amount_median, as_of)]
    return rows, expected


@pytest.fixture(scope="module", params=["server", "chdb"])
def population(request: pytest.FixtureRequest) -> Iterator[tuple[Sink, dict[str, tuple]]]:
    url = sink_url(request, f"pop_{uuid.uuid4().hex[:8]}")
    rows, expected = population_data()
    with open_sink(url) as sink:
        sink.migrate()
        for table in ("events", "customer_state", "stream_clock", "rfm_cutoffs"):
            sink.insert(table, rows[table])
        yield sink, expected


def test_scores_segments_quadrants_and_flags_equal_the_domains(
    population: tuple[Sink, dict[str, tuple]],
) -> None:
    sink, expected = population
    got = {
        r[0]: r[1:]
        for r in select(
            sink,
            "SELECT customer_id, r_score, f_score, m_score, segment, quadrant, "
            "key_account, transaction_buyer FROM {db}.customer_scores",
        )
    }
    assert got == expected
    assert sum(e[5] for e in expected.values()) >= 3, "the population must hold key accounts"
    assert sum(e[6] for e in expected.values()) >= 3, "... and transaction buyers"


def test_the_latest_month_of_segment_monthly_gives_the_segments_of_customer_scores(
    population: tuple[Sink, dict[str, tuple]],
) -> None:
    sink, expected = population
    latest = select(
        sink,
        "SELECT segment, customers FROM {db}.segment_monthly "
        "WHERE month = '2024-03-01' ORDER BY segment",
    )
    assert latest == sorted(Counter(e[3] for e in expected.values()).items())


def test_the_value_matrix_and_key_accounts_follow_the_scores(
    population: tuple[Sink, dict[str, tuple]],
) -> None:
    sink, expected = population
    matrix = select(sink, "SELECT quadrant, customers, key_accounts FROM {db}.value_matrix")
    quadrants = Counter(e[4] for e in expected.values())
    keys = Counter(e[4] for e in expected.values() if e[5])
    assert matrix == [(q, quadrants[q], keys[q]) for q in scoring.QUADRANTS if quadrants[q]]
    accounts = {r[0] for r in select(sink, "SELECT customer_id FROM {db}.key_accounts")}
    assert accounts == {cid for cid, e in expected.items() if e[5]}
