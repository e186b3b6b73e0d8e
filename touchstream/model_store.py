"""The churn model in ClickHouse: fit it from the stream's summary (``touchstream fit``, and
the worker's scheduled fit), write the versions to model_params, load the chosen one.

The summary is the customer_rfm view as of stream time; the holdout comparison splits it
``btyd.HORIZON_DAYS`` before stream time, from the purchase days in the events table
(docs/churn-probability.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sinks.base import Sink
from sinks.rows import model_params_row
from sinks.tables import chosen_model_sql
from touchstream.domain import btyd

if TYPE_CHECKING:  # numpy and scipy load only for a fit, not in every worker's start
    from touchstream.fitting import Holdout, Report, Summary

DAY_MS = 86_400_000


def stream_time_ms(sink: Sink) -> int | None:
    """The latest stream time (epoch ms) in stream_clock, None before any event."""
    _, rows = sink.query(
        f"SELECT toUInt64(max(stream_time)), count() FROM {sink.database}.stream_clock FINAL"
    )
    if not rows or not int(rows[0][1]):
        return None
    return int(rows[0][0]) * 1000


def read_summary(sink: Sink) -> Summary:
    """Every buyer's (frequency, recency, T, monetary_value) as of stream time."""
    import numpy as np

    from touchstream.fitting import Summary

    _, rows = sink.query(
        f"SELECT frequency, recency, T, monetary_value FROM {sink.database}.customer_rfm"
    )
    return Summary.of(rows) if rows else Summary(*(np.empty(0),) * 3, np.empty(0))


def read_holdout(sink: Sink, as_of_ms: int, days: int = btyd.HORIZON_DAYS) -> Holdout:
    """The customers who bought by the split day (``days`` before stream time's day), their
    summary then, and their repeat purchase days after it, from the events table."""
    import numpy as np

    from touchstream.fitting import Holdout, Summary

    split = as_of_ms // DAY_MS - days
    as_of_s = as_of_ms // 1000
    db = sink.database
    # Day numbers since 1970-01-01: toRelativeDayNum counts from another origin, and only
    # differences matter; the split is compared in the same numbering.
    origin = "toRelativeDayNum(toDateTime(0, 'UTC'))"
    _, rows = sink.query(f"""
SELECT toFloat64(uniqExactIf(d, d <= {split}) - 1), toFloat64(maxIf(d, d <= {split}) - min(d)),
       toFloat64({split} - min(d)), toFloat64(uniqExactIf(d, d > {split}))
FROM (
  SELECT customer_id, toInt64(toRelativeDayNum(occurred_at)) - {origin} AS d
  FROM {db}.events FINAL
  WHERE type = 'purchase' AND occurred_at <= toDateTime({as_of_s}, 'UTC')
)
GROUP BY customer_id
HAVING min(d) <= {split}""")
    if not rows:
        return Holdout(Summary(*(np.empty(0),) * 3), np.empty(0), days)
    a = np.asarray(rows, dtype=float)
    return Holdout(Summary(a[:, 0], a[:, 1], a[:, 2]), a[:, 3], days)


@dataclass(frozen=True)
class Fitted:
    version: int
    as_of_ms: int
    report: Report
    rows: list[tuple[Any, ...]]

    @property
    def model(self) -> btyd.Model:
        return self.report.model(self.version)


def fit(sink: Sink, now_ms: int | None = None) -> Fitted:
    """Fit every model on the stream's summary and write one version to model_params.
    ``now_ms``: the fit's wall-clock time, which is also its version (default: now)."""
    from touchstream.fitting import FitError, fit_all

    as_of = stream_time_ms(sink)
    if as_of is None:
        raise FitError("no stream time yet: nothing has been processed to fit on")
    summary = read_summary(sink)
    if len(summary) == 0:
        raise FitError("no customer has bought yet: nothing to fit on")
    report = fit_all(summary, read_holdout(sink, as_of))
    version = int(time.time() * 1000) if now_ms is None else now_ms
    spend = report.spend
    rows = []
    for c in report.candidates:
        cal = report.calibration.weights if c.chosen and report.calibration else None
        rows.append(
            model_params_row(
                version,
                c.fit.name,
                c.chosen,
                c.fit.params,
                None if spend is None else (spend.p, spend.q, spend.v),
                cal,
                version,
                as_of,
                c.fit.log_likelihood,
                c.fit.n,
                report.holdout_days,
                report.holdout_customers,
                c.holdout_log_loss,
                c.holdout_predicted,
                c.holdout_actual,
                c.choice,
            )
        )
    sink.insert("model_params", rows)
    return Fitted(version, as_of, report, rows)


def load_chosen(sink: Sink) -> btyd.Model | None:
    """The model the stream scores with: the latest version's chosen row (None: no fit)."""
    _, rows = sink.query(f"SELECT {chosen_model_sql(sink.database)}")
    if not rows:
        return None
    version, name, p1, p2, p3, p4, sp, sq, sv, calibrated, *w = rows[0]
    names = btyd.ParetoNbd.PARAMS if name == "pareto_nbd" else btyd.BgNbd.PARAMS
    params = dict(zip(names, (float(p1), float(p2), float(p3), float(p4)), strict=True))
    spend = btyd.GammaGamma(float(sp), float(sq), float(sv)) if float(sq) > 0 else None
    cal = btyd.Calibration(tuple(map(float, w))) if int(calibrated) else None
    return btyd.Model(int(version), btyd.purchase_model(name, params), spend, cal)


def latest_version(sink: Sink) -> int:
    """The latest chosen version in model_params (0: none): cheap, for polling."""
    _, rows = sink.query(f"SELECT max(version) FROM {sink.database}.model_params WHERE chosen = 1")
    return int(rows[0][0] or 0) if rows else 0
