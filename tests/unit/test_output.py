"""touchstream.output: query results as table, vertical, CSV, TSV and JSON lines."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from touchstream.alerts_tail import AlertFilter
from touchstream.output import as_plain_table, render, table_fits

COLS = ["customer_id", "net_spend", "last_purchase_at", "note"]
ROWS = [
    ("c1", Decimal("12.5000"), datetime(2024, 3, 20, 12, 0, tzinfo=UTC), "a\tb"),
    ("c2", Decimal("-3"), None, 'say "hi", then\nleave'),
]


def test_csv_quotes_what_needs_it_and_leaves_null_empty() -> None:
    parsed = list(csv.reader(io.StringIO(render("csv", COLS, ROWS))))
    assert parsed == [
        COLS,
        ["c1", "12.5000", "2024-03-20 12:00:00", "a\tb"],
        ["c2", "-3", "", 'say "hi", then\nleave'],
    ]


def test_tsv_escapes_tabs_and_newlines_and_writes_null_as_backslash_n() -> None:
    lines = render("tsv", COLS, ROWS).splitlines()
    assert lines[0] == "\t".join(COLS)
    assert lines[1] == "c1\t12.5000\t2024-03-20 12:00:00\ta\\tb"
    assert lines[2] == 'c2\t-3\t\\N\tsay "hi", then\\nleave'


def test_json_gives_one_object_per_row_with_numbers_as_numbers() -> None:
    objs = [json.loads(line) for line in render("json", COLS, ROWS).splitlines()]
    assert objs[0] == {
        "customer_id": "c1",
        "net_spend": 12.5,
        "last_purchase_at": "2024-03-20 12:00:00",
        "note": "a\tb",
    }
    assert objs[1]["last_purchase_at"] is None


def test_vertical_shows_each_row_as_column_value_lines() -> None:
    out = render("vertical", COLS, ROWS)
    assert "Row 1:" in out and "Row 2:" in out
    assert "customer_id:      c1" in out
    assert "last_purchase_at: NULL" in out


def test_a_plain_table_is_as_wide_as_its_content_and_cuts_nothing() -> None:
    cols = [f"column_number_{i}" for i in range(40)]
    rows = [tuple(f"value-{i}-{'x' * i}" for i in range(40))]
    out = as_plain_table(cols, rows)
    header, _rule, line = out.splitlines()
    assert all(c in header for c in cols)
    assert all(v in line for v in rows[0])
    assert len(header) > 1000


def test_a_wide_result_does_not_fit_a_terminal_and_a_narrow_one_does() -> None:
    assert table_fits(["a", "b"], [(1, 2)], 80)
    assert not table_fits([f"col_{i}" for i in range(30)], [tuple(range(30))], 80)


def test_an_unknown_format_is_an_error_naming_the_formats() -> None:
    with pytest.raises(ValueError, match="table, vertical, csv, tsv, json"):
        render("xml", COLS, ROWS)


def test_the_alert_filter_takes_kinds_and_a_severity_by_number_or_label() -> None:
    f = AlertFilter.of(["decline,churned"], "high")
    assert f.wants({"kind": "decline", "severity": 3})
    assert f.wants({"kind": "churned", "severity": 4})
    assert not f.wants({"kind": "decline", "severity": 2})
    assert not f.wants({"kind": "churn_risk", "severity": 4})
    assert AlertFilter.of([], "2").wants({"kind": "recovered", "severity": 2})
    assert AlertFilter().wants({"kind": "anything"})


@pytest.mark.parametrize(
    "kinds, severity, message",
    [
        (["declined"], "1", "unknown alert kind declined"),
        ([], "5", "use 1-4 or low, medium, high, critical"),
        ([], "urgent", "use 1-4"),
    ],
)
def test_a_wrong_alert_filter_says_what_is_allowed(kinds, severity, message) -> None:
    with pytest.raises(ValueError, match=message):
        AlertFilter.of(kinds, severity)
