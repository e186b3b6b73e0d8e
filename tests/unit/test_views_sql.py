"""The views' SQL is generated from the Python constants: change a constant and the SQL
follows (no literal of the rules is typed twice)."""

from __future__ import annotations

import pytest

from sinks import tables, views
from touchstream.domain import scoring


def test_sql_strings_escape_quotes_and_backslashes() -> None:
    assert views.sql_str("it's a \\ test") == "'it\\'s a \\\\ test'"
    assert views.sql_array(["a", 1, 2.5]) == "['a', 1, 2.5]"


@pytest.mark.parametrize(
    "name, value",
    [
        ("KEY_ACCOUNT_MIN_M_SCORE", 4),
        ("KEY_ACCOUNT_MIN_TENURE_DAYS", 730),
        ("KEY_ACCOUNT_MIN_PURCHASE_DAYS", 7),
        ("TRANSACTION_BUYER_MIN_DAYS", 120),
        ("RATE_MIN_WINDOW_DAYS", 180),
    ],
)
def test_the_scores_view_takes_its_thresholds_from_the_scoring_constants(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: int,
) -> None:
    before = tables.scores_view("db")
    monkeypatch.setattr(scoring, name, value)
    after = tables.scores_view("db")
    assert after != before and str(value) in after


def test_the_quadrant_names_come_from_scoring_quadrants(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scoring, "QUADRANTS", ("q_best", "q_freq", "q_rare", "q_unsure"))
    sql = tables.scores_view("db")
    for q in ("q_best", "q_freq", "q_rare", "q_unsure"):
        assert f"'{q}'" in sql
    assert "'best'" not in sql


def test_the_csm_item_scores_come_from_the_satisfaction_levels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(views, "SATISFACTION_LEVELS", {"happy": 77, "sad": -11})
    sql = views.satisfaction_monthly("db")
    assert "['happy', 'sad']" in sql and "[77, -11]" in sql


def test_a_customer_state_column_appended_later_appears_in_the_profile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = tables.CUSTOMER_STATE
    grown = tables.Table(
        state.name, (*state.columns, ("churn_probability", "Float64")), state.engine
    )
    monkeypatch.setattr(views, "CUSTOMER_STATE", grown)
    assert "churn_probability" in views.customer_profile("db").split("FROM")[0]


def test_every_analyst_view_is_created_after_the_views_it_reads() -> None:
    defs = tables.view_definitions("db")
    names = list(defs)
    for i, (name, select) in enumerate(defs.items()):
        for later in names[i + 1 :]:
            assert f"db.{later} " not in select and f"db.{later}\n" not in select, (name, later)
