"""With a churn model loaded, the Processor puts each changed customer's four values into
its customer_state row and the churn probability and value at risk into its alerts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from agents.processor import Processor
from agents.records import RawMessage, Stored
from sinks.tables import ALERTS, CUSTOMER_STATE
from touchstream.domain import btyd

NOW = datetime(2000, 1, 1, tzinfo=UTC)
MODEL = btyd.Model(
    7,
    btyd.MbgNbd(0.64, 51.2, 0.81, 1.23),
    btyd.GammaGamma(6.25, 3.74, 15.44),
    btyd.Calibration((0.06, 0.47, 0.04, -0.9, 0.02, 0.19)),
)
STATE = CUSTOMER_STATE.column_names
ALERT = ALERTS.column_names


def purchase(i: int, cid: str, day: str, amount: str) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "customer_id": cid,
        "type": "purchase",
        "amount": amount,
        "currency": "USD",
        "occurred_at": f"{day}T10:00:00Z",
    }


EVENTS = [
    purchase(1, "a", "2024-01-01", "20"),
    purchase(2, "b", "2024-01-03", "15"),
    purchase(3, "a", "2024-01-20", "30"),
    purchase(4, "a", "2024-02-10", "50"),
    purchase(5, "c", "2024-02-11", "5"),
]


def replay(
    model: btyd.Model | None, events: list[dict[str, Any]], clock: str | None = None, batch: int = 2
) -> tuple[dict[str, tuple], list[tuple], list[dict]]:
    """One partition; the last customer_state row per customer, the alert rows and the
    alert messages."""
    from schemas.events import epoch_ms
    from touchstream.domain.messages import clock_value

    proc, table = Processor(model=model), {}
    msgs = [
        RawMessage("t", 0, i, e["customer_id"].encode(), orjson.dumps(e))
        for i, e in enumerate(events)
    ]
    if clock:
        at = epoch_ms(datetime.fromisoformat(clock.replace("Z", "+00:00")))
        msgs.append(RawMessage("t", 0, len(msgs), b"__touchstream_clock__", clock_value(at)))
    states: dict[str, tuple] = {}
    alert_rows, alerts = [], []

    def scan(p: int) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in table.items() if Stored.partition_of(v) == p]

    for j in range(0, len(msgs), batch):
        r = proc.process(msgs[j : j + batch], table.get, NOW, scan)
        table.update(r.states)
        states.update({row[0]: row for row in r.rows["customer_state"]})
        alert_rows += r.rows["alerts"]
        alerts += [orjson.loads(v) for _, v in r.alerts]
    return states, alert_rows, alerts


def col(row: tuple, name: str) -> Any:
    return row[STATE.index(name)]


def test_each_changed_customer_is_scored_as_of_its_latest_event() -> None:
    states, _, _ = replay(MODEL, EVENTS)
    a = states["a"]
    # a: purchase days Jan 1, 20, Feb 10: x 2, tx 40, T 40 (as of Feb 10), m (30 + 50) / 2
    want = MODEL.score(2, 40, 40, 40.0)
    got = tuple(
        col(a, c)
        for c in (
            "p_alive",
            "churn_probability_90d",
            "expected_purchases_90d",
            "predicted_clv_365d",
        )
    )
    assert got == tuple(want)
    assert col(a, "model_version") == 7
    assert col(a, "scored_at") == int(datetime(2024, 2, 10, 10, tzinfo=UTC).timestamp() * 1000)
    assert col(states["b"], "p_alive") == MODEL.score(0, 0, 0, 0.0).p_alive


def test_without_a_model_the_values_are_null_and_the_version_zero() -> None:
    states, _, _ = replay(None, EVENTS)
    assert {
        tuple(col(r, c) for c in ("p_alive", "churn_probability_90d", "model_version", "scored_at"))
        for r in states.values()
    } == {(None, None, 0, None)}


def test_the_values_do_not_depend_on_how_the_events_were_batched() -> None:
    one, _, _ = replay(MODEL, EVENTS, batch=1)
    all_at_once, _, _ = replay(MODEL, EVENTS, batch=100)
    assert one == all_at_once


def test_a_silence_deadline_rescores_the_customer_at_the_deadline() -> None:
    states, _, _ = replay(MODEL, EVENTS[:2], clock="2024-12-31T00:00:00Z")
    b = states["b"]  # one purchase on Jan 3: declined at 90 days, churned at 180
    assert col(b, "stage") == "churned"
    since = col(b, "stage_since")
    assert col(b, "scored_at") == since
    T = since // 86_400_000 - int(datetime(2024, 1, 3, tzinfo=UTC).timestamp()) // 86_400
    assert col(b, "churn_probability_90d") == MODEL.score(0, 0, T, 0.0).churn_probability_90d
    assert col(b, "churn_probability_90d") > MODEL.score(0, 0, 0, 0.0).churn_probability_90d


def test_alerts_carry_the_churn_probability_and_the_value_at_risk_of_their_time() -> None:
    _, rows, alerts = replay(MODEL, EVENTS[:2], clock="2024-12-31T00:00:00Z")
    decline = next(a for a in alerts if a["customer_id"] == "b" and a["kind"] == "decline")
    days = (
        datetime.fromisoformat(decline["at"].replace("Z", "+00:00"))
        - datetime(2024, 1, 3, tzinfo=UTC)
    ).days
    want = MODEL.score(0, 0, days, 0.0)
    assert decline["churn_probability_90d"] == want.churn_probability_90d
    assert decline["value_at_risk"] == want.predicted_clv_365d
    assert (
        f"Churn probability (no purchase in 90 days) {want.churn_probability_90d:.2f}"
        in decline["message"]
    )
    row = next(r for r in rows if r[ALERT.index("alert_id")] == decline["alert_id"])
    assert row[ALERT.index("churn_probability_90d")] == want.churn_probability_90d
    assert row[ALERT.index("value_at_risk")] == want.predicted_clv_365d


def test_without_a_model_alerts_have_null_churn_fields_and_the_usual_message() -> None:
    _, _, alerts = replay(None, EVENTS[:2], clock="2024-12-31T00:00:00Z")
    assert alerts and all(
        a["churn_probability_90d"] is None
        and a["value_at_risk"] is None
        and "Churn probability" not in a["message"]
        for a in alerts
    )


def test_a_model_the_formulas_cannot_evaluate_leaves_the_values_null_and_the_stream_going() -> None:
    # Parameters of a degenerate fit seen on a live worker: the series of the expected
    # purchases does not converge for repeat buyers.
    broken = btyd.Model(
        9, btyd.purchase_model("bgnbd", {"r": 1.0, "alpha": 8e6, "a": 9.5e10, "b": 3.2e11})
    )
    states, _, _ = replay(broken, EVENTS)
    assert set(states) == {"a", "b", "c"}
    assert col(states["a"], "churn_probability_90d") is None  # a buys again: not evaluable


def test_a_fit_whose_parameters_cannot_score_its_customers_is_refused_in_one_line() -> None:
    import numpy as np
    import pytest

    from touchstream.fitting import Fit, FitError, Summary, scores_customers

    s = Summary(np.array([0.0, 3.0]), np.array([0.0, 10.0]), np.array([5.0, 20.0]))
    bad = Fit("bgnbd", {"r": 1.0, "alpha": 8e6, "a": 9.5e10, "b": 3.2e11}, -1.0, 2)
    with pytest.raises(FitError, match=r"^bgnbd: its parameters \(r 1, alpha 8e\+06"):
        scores_customers(bad, s)
    scores_customers(Fit("bgnbd", {"r": 0.24, "alpha": 4.4, "a": 0.79, "b": 2.4}, -1.0, 2), s)
