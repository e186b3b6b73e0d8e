"""`touchstream report`: one self-contained HTML file of the analysts' views.

Charts are inline SVG drawn by touchstream/charts.py (no JavaScript library, nothing
fetched): segments, lifecycle funnel and exit patterns, defection types over time,
retention by cohort, complaint outcome against repurchase, the CSM trend. A small inline
script, after the page is laid out, counts each chart's drawn marks and sets
``data-rendered`` on it and ``data-charts="drawn/total"`` on the body (what the browser
test reads). The key tables are in the page and printed to the console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from sinks import Sink
from sinks.views import sql_str
from touchstream import charts
from touchstream.domain import lifecycle
from touchstream.output import text

QUERIES = {
    "as_of": "SELECT toString(max(stream_time)) FROM {db}.stream_clock FINAL",
    "segments": "SELECT segment, count() AS customers, sum(net_spend) AS segment_net_spend "
    "FROM {db}.customer_scores GROUP BY segment ORDER BY customers DESC, segment",
    "segment_revenue": "SELECT substring(toString(month), 1, 7) AS m, segment, revenue "
    "FROM {db}.segment_monthly ORDER BY m, segment",
    "funnel": "SELECT stage, customers, relationships, pct_of_started FROM {db}.lifecycle_funnel",
    "durations": "SELECT stage, completed_stays, median_days, p90_days, ongoing_stays "
    "FROM {db}.stage_durations",
    "exits": "SELECT pattern, relationships, pct FROM {db}.exit_patterns",
    "defections": "SELECT substring(toString(month), 1, 7) AS m, defection_type, "
    "sum(alerts) AS n FROM {db}.defection_monthly "
    f"WHERE kind = {sql_str(lifecycle.DECLINE)} GROUP BY m, defection_type "
    "ORDER BY m, defection_type",
    "retention": "SELECT substring(toString(cohort), 1, 7) AS c, period, retention_pct, "
    "cohort_customers FROM {db}.retention_cohorts ORDER BY c, period",
    "complaints": "SELECT complaint_outcome, customers, repurchased_customers, "
    "repurchase_pct FROM {db}.complaint_repurchase",
    "csm": "SELECT substring(toString(month), 1, 7) AS m, sum(surveys) AS n_surveys, "
    "round(sum(score_sum) / n_surveys, 1) AS csm_all FROM {db}.satisfaction_monthly "
    "GROUP BY m ORDER BY m",
    "value_matrix": "SELECT quadrant, customers, pct, net_spend, pct_of_net_spend, "
    "key_accounts FROM {db}.value_matrix",
}

# The tables printed and put in the page: title -> query name.
KEY_TABLES = {
    "Segments now": "segments",
    "Lifecycle funnel (relationships reaching each stage)": "funnel",
    "Stage durations (days)": "durations",
    "Exit patterns": "exits",
    "Complaint outcome and repurchase": "complaints",
    "Customer value matrix": "value_matrix",
}


@dataclass
class Result:
    cols: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class Report:
    results: dict[str, Result]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def as_of(self) -> str:
        rows = self.results["as_of"].rows
        return str(rows[0][0]) if rows else ""


def gather(sink: Sink) -> Report:
    out = {}
    for name, sql in QUERIES.items():
        cols, rows = sink.query(sql.format(db=sink.database))
        out[name] = Result(cols, [tuple(r) for r in rows])
    return Report(out)


def _num(v: Any) -> float:
    return float(v) if v is not None else 0.0


def _series(rows: Sequence[tuple[Any, ...]]) -> tuple[list[str], dict[str, list[float]]]:
    """(x, name, value) rows -> the x labels and one value list per name."""
    labels = sorted({str(r[0]) for r in rows})
    index = {lab: i for i, lab in enumerate(labels)}
    series: dict[str, list[float]] = {}
    for x, name, v in rows:
        series.setdefault(str(name), [0.0] * len(labels))[index[str(x)]] += _num(v)
    return labels, series


def chart_figures(r: Report) -> list[str]:
    res = r.results
    seg_labels, seg_series = _series(res["segment_revenue"].rows)
    def_labels, def_series = _series(res["defections"].rows)
    cohorts = sorted({str(row[0]) for row in res["retention"].rows})[-24:]
    periods = sorted({int(row[1]) for row in res["retention"].rows if str(row[0]) in cohorts})
    cells = {(str(c), str(p)): _num(v) for c, p, v, _ in res["retention"].rows}
    csm = res["csm"].rows
    return [
        charts.hbars(
            "segments",
            "Customers per segment (R/F segment map, now)",
            [(str(s), _num(n)) for s, n, _ in res["segments"].rows],
        ),
        charts.stacked(
            "segment-revenue",
            "Net revenue per month by segment",
            seg_labels,
            seg_series,
            note="segment as of each month's end",
        ),
        charts.hbars(
            "funnel",
            "Lifecycle funnel: relationships reaching each stage",
            [(str(s), _num(n)) for s, _, n, _ in res["funnel"].rows],
        ),
        charts.hbars(
            "exit-patterns",
            "Exit patterns (ended relationships) and long-term retention",
            [(str(p), _num(pct)) for p, _, pct in res["exits"].rows],
            unit="%",
        ),
        charts.stacked(
            "defections", "Declines per month by defection type", def_labels, def_series
        ),
        charts.heatmap(
            "retention",
            "Retention: % of each first-purchase cohort buying n months later",
            cohorts,
            [str(p) for p in periods],
            cells,
        ),
        charts.hbars(
            "complaints",
            "Repurchase by complaint outcome",
            [(str(o), _num(pct)) for o, _, _, pct in res["complaints"].rows],
            unit="%",
            note="none: a second purchase day; else a purchase after the latest complaint",
        ),
        charts.line(
            "csm",
            "Customer satisfaction (CSM, -90 to 90) per month",
            [str(m) for m, _, _ in csm],
            [_num(v) for _, _, v in csm],
            -90,
            90,
        ),
    ]


def _html_table(title: str, res: Result) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in res.cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(text(v))}</td>" for v in r) + "</tr>" for r in res.rows
    )
    return f"<h3>{escape(title)}</h3><table><tr>{head}</tr>{body}</table>"


CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var figures = document.querySelectorAll('figure.chart'), drawn = 0;
  figures.forEach(function (f) {
    var marks = 0;
    f.querySelectorAll('svg .mark').forEach(function (m) {
      var b = m.getBBox();
      if (b.width > 0 || b.height > 0) { marks += 1; }
    });
    f.dataset.marks = String(marks);
    f.dataset.rendered = marks > 0 ? 'yes' : 'no';
    if (marks > 0) { drawn += 1; }
  });
  document.body.dataset.charts = drawn + '/' + figures.length;
});
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 820px;
       color: #222; }
figure { margin: 24px 0; } figcaption { font-weight: 600; margin-bottom: 6px; }
.note { font-weight: normal; color: #777; font-size: 12px; }
svg text { font: 12px system-ui, sans-serif; fill: #333; } svg .tick { font-size: 11px; }
svg .cell { font-size: 10px; fill: #fff; } svg .axis { stroke: #999; }
table { border-collapse: collapse; margin-bottom: 12px; }
td, th { border-bottom: 1px solid #ddd; padding: 3px 10px; text-align: left; }
"""


def to_html(r: Report, source: str) -> str:
    tables = "".join(_html_table(t, r.results[q]) for t, q in KEY_TABLES.items())
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>touchstream report</title>"
        f"<style>{STYLE}</style></head><body>"
        "<h1>touchstream: customer relationships</h1>"
        f"<p>Stream time {escape(r.as_of)} · {escape(source)} · made "
        f"{r.generated_at:%Y-%m-%d %H:%M} UTC. Definitions: docs/analysts.md.</p>"
        + "".join(chart_figures(r))
        + "<h2>Key tables</h2>"
        + tables
        + f"<script>{CHECK_SCRIPT}</script></body></html>"
    )


def write_report(sink: Sink, out: Path) -> Report:
    r = gather(sink)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_html(r, getattr(sink, "url_for_humans", sink.database)), encoding="utf-8")
    return r


def print_tables(r: Report, console: Any) -> None:
    from rich.table import Table
    from rich.text import Text

    for title, name in KEY_TABLES.items():
        res = r.results[name]
        t = Table(*res.cols, title=title, title_justify="left")
        for row in res.rows:
            t.add_row(*(Text(text(v)) for v in row))
        console.print(t)
