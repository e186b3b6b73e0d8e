"""touchstream.profile: the till's figures from a customer's live state."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.decode import decode
from schemas.events import epoch_ms
from tests.steps import step
from touchstream.profile import live_profile, month_figures, month_start_day


def state_of(purchases: list[tuple[str, str]]):
    state = None
    for i, (when, amount) in enumerate(purchases):
        ev = decode(
            json.dumps(
                {
                    "event_id": f"e{i}",
                    "customer_id": "c",
                    "type": "purchase",
                    "amount": amount,
                    "currency": "EUR",
                    "occurred_at": when,
                }
            ).encode()
        )
        state, _ = step(state, ev)
    return state


def ms(s: str) -> int:
    return epoch_ms(datetime.fromisoformat(s).replace(tzinfo=UTC))


def test_the_month_starts_on_its_first_utc_day() -> None:
    assert month_start_day(ms("2024-03-20T12:00:00")) == ms("2024-03-01T00:00:00") // 86_400_000


def test_visits_are_purchase_days_this_month_and_spend_their_purchases() -> None:
    s = state_of(
        [
            ("2024-02-27T10:00:00Z", "9"),
            ("2024-03-02T10:00:00Z", "30"),
            ("2024-03-15T10:00:00Z", "20"),
            ("2024-03-15T18:00:00Z", "5"),
        ]
    )
    assert month_figures(s, ms("2024-03-20T12:00:00")) == (2, 55.0, True)
    p = live_profile(s, ms("2024-03-20T12:00:00"), 3.0)
    assert (p["month"], p["visits_this_month"], p["spend_this_month"]) == ("2024-03", 2, "55.0")
    assert p["purchases"] == 4 and p["net_spend"] == "64" and p["open_alert"] == ""


def test_spend_beyond_the_kept_purchase_days_is_flagged_as_not_exact() -> None:
    days = [f"2024-03-{d:02d}T10:00:00Z" for d in range(1, 9)]  # 8 visits, 6 days kept
    s = state_of([(d, "10") for d in days])
    visits, spend, exact = month_figures(s, ms("2024-03-20T00:00:00"))
    assert (visits, exact) == (8, False)
    assert spend == 60.0  # the latest six days: a lower bound


def test_the_profile_is_as_of_the_customers_own_latest_event_at_the_least() -> None:
    s = state_of([("2024-04-01T10:00:00Z", "10")])
    p = live_profile(s, ms("2024-03-31T23:00:00"), 3.0)  # the worker's clock lags behind
    assert p["month"] == "2024-04" and p["visits_this_month"] == 1
