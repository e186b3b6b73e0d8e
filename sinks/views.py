"""The analysts' views: each answers one question of domain.md with one SELECT.

Every view runs on ClickHouse 18.16 (no window functions, JSONExtract, Map or
DateTime64), on a current server and on chdb. Every threshold, name and score in them
comes from the Python constants the worker uses (touchstream/domain/, schemas/events.py):
the SQL is generated from them, never typed twice. docs/analysts.md describes each view
column by column.

"Now" is stream time: ``max(stream_time)`` of ``stream_clock`` (docs/analysts.md), and
"this month" is the calendar month (UTC) of stream time.

A lambda never reads a column of its row directly: ClickHouse 18.16 drops such a column
from the subquery it comes from ("Unknown identifier"), so the value goes in as an array
of its own (``replicate(value, array)``).

Segments over time (``segment_monthly``, and the segment of ``defection_monthly`` and
``satisfaction_monthly``) are scored from the events, month by month, with the quintile
rule of docs/scoring.md: R and F are exact there (one bucket per day and per purchase
day), so the cut-offs of a month are order statistics of that month's population, and the
latest month gives the segments of ``customer_scores`` when its cut-offs are quintiles of
the same population. Configured fixed thresholds apply to ``customer_scores`` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from schemas.events import SATISFACTION_LEVELS
from sinks.tables import CUSTOMER_STATE, _segment_sql
from touchstream.domain import lifecycle
from touchstream.domain.alerts import LEVEL as ALERT_LEVEL
from touchstream.domain.issues import OUTCOMES
from touchstream.domain.scoring import QUADRANTS

# The customer_scores columns customer_profile takes (the rest are customer_state's).
PROFILE_SCORE_COLUMNS = (
    "r_score",
    "f_score",
    "m_score",
    "segment",
    "quadrant",
    "key_account",
    "transaction_buyer",
)
# A customer who had not bought before the month began has no segment at its start.
NO_SEGMENT_YET = "(none yet)"
LONG_TERM_RETENTION = "long_term_retention"
STAGES = (*lifecycle.ACTIVE, lifecycle.DECLINE, lifecycle.CHURNED)


def sql_str(s: str) -> str:
    """A ClickHouse string literal."""
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sql_array(items: Iterable[str | int | float]) -> str:
    return "[" + ", ".join(sql_str(i) if isinstance(i, str) else repr(i) for i in items) + "]"


def _as_of(db: str) -> str:
    return f"(SELECT max(stream_time) FROM {db}.stream_clock FINAL)"


def _purchase_histories(db: str) -> str:
    """Per buyer: the purchase days (day numbers) and, per day with purchases or refunds,
    the net amount of that day (purchases - refunds, Float64: 18.16 cannot sum Decimal
    arrays)."""
    return f"""SELECT customer_id,
      groupArrayIf(day, bought) AS days,
      groupArray(day) AS amount_days,
      groupArray(net) AS amounts
    FROM (
      SELECT customer_id, toUInt32(toDate(occurred_at)) AS day,
        countIf(type = 'purchase') > 0 AS bought,
        toFloat64(sumIf(amount, type = 'purchase')) - toFloat64(sumIf(amount, type = 'refund'))
          AS net
      FROM {db}.events FINAL
      WHERE type IN ('purchase', 'refund')
      GROUP BY customer_id, day
    )
    GROUP BY customer_id
    HAVING length(days) > 0"""


def _months(db: str) -> str:
    """Every calendar month from the first purchase to stream time, with its first day
    and its last day (stream time's day for the current month) as day numbers."""
    return f"""SELECT month, toUInt32(month) AS start_day,
      least(toUInt32(addMonths(month, 1)) - 1, toUInt32(toDate(as_of))) AS end_day
    FROM (
      SELECT addMonths(first_month, arrayJoin(range(toUInt64(n)))) AS month, as_of
      FROM (
        SELECT toStartOfMonth(min(occurred_at)) AS first_month, any(now_) AS as_of,
          greatest(toRelativeMonthNum(as_of) - toRelativeMonthNum(min(occurred_at)) + 1, 0)
            AS n
        FROM (SELECT occurred_at, {_as_of(db)} AS now_
              FROM {db}.events FINAL WHERE type = 'purchase')
      )
    )"""


def _score(value: str, prefix: str) -> str:
    # 1 + the number of cut-offs at or below the value; with exact values the cut-off at
    # q is just above the value of rank ceil(q * n) (docs/scoring.md), hence ">".
    return "1 + " + " + ".join(f"({value} > {prefix}{i})" for i in range(1, 5))


def _threshold(sorted_values: str, i: int) -> str:
    return f"{sorted_values}[intDiv({i} * n + 4, 5)]"  # rank ceil(i/5 * n), 1-based


def customer_months(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> str:
    """One row per buyer and calendar month since its first purchase: purchase days and
    last purchase day as of the month's end (stream time in the current month), R and F
    scored against that month's population, the segment, whether it bought in the month
    and its net revenue in the month."""
    return f"""SELECT month, customer_id, purchase_days, last_day, bought, revenue,
    r_score, f_score, {_segment_sql("r_score * 10 + f_score", segment_map)} AS segment
  FROM (
    SELECT month, customer_id, purchase_days, last_day, bought, revenue,
      {_score("last_day", "r")} AS r_score, {_score("purchase_days", "f")} AS f_score
    FROM (
      SELECT month, groupArray(customer_id) AS ids, groupArray(purchase_days) AS fs,
        groupArray(last_day) AS rs, groupArray(bought) AS bs, groupArray(revenue) AS revs,
        count() AS n, arraySort(rs) AS rs_sorted, arraySort(fs) AS fs_sorted,
        {", ".join(f"{_threshold('rs_sorted', i)} AS r{i}" for i in range(1, 5))},
        {", ".join(f"{_threshold('fs_sorted', i)} AS f{i}" for i in range(1, 5))}
      FROM (
        SELECT month, customer_id,
          arrayCount((d, e) -> d <= e, days, replicate(end_day, days)) AS purchase_days,
          arrayReduce('max', arrayFilter((d, e) -> d <= e, days, replicate(end_day, days)))
            AS last_day,
          arrayCount((d, b, e) -> d >= b AND d <= e, days, replicate(start_day, days),
                     replicate(end_day, days)) > 0 AS bought,
          arraySum(arrayMap((d, a, b, e) -> if(d >= b AND d <= e, a, 0), amount_days, amounts,
                            replicate(start_day, amounts), replicate(end_day, amounts)))
            AS revenue
        FROM ({_purchase_histories(db)}) AS h
        CROSS JOIN ({_months(db)}) AS m
        WHERE purchase_days > 0
      )
      GROUP BY month
    )
    ARRAY JOIN ids AS customer_id, fs AS purchase_days, rs AS last_day, bs AS bought,
      revs AS revenue
  )"""


def _segment_at_month_start(db: str, segment_map: Sequence[Sequence[str]] | None) -> str:
    """(customer_id, prev_month, segment): join on prev_month = the previous month to get
    the segment a customer was in when a month began."""
    return (
        f"SELECT customer_id, month AS prev_month, segment "
        f"FROM ({customer_months(db, segment_map)})"
    )


def segment_monthly(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> str:
    return f"""SELECT month, segment, count() AS customers, countIf(bought) AS buyers,
  round(sum(revenue), 2) AS revenue
FROM ({customer_months(db, segment_map)})
GROUP BY month, segment
ORDER BY month, segment"""


def _left_joins(
    base: str, columns: Sequence[str], joins: Sequence[tuple[str, Sequence[str]]]
) -> str:
    """``base`` LEFT JOIN each of ``joins`` (a SELECT and the columns it adds) USING
    (customer_id), one join per SELECT (ClickHouse 18.16 takes no more)."""
    sql, cols = base, list(columns)
    for i, (sub, more) in enumerate(joins):
        cols += more
        sql = (
            f"SELECT {', '.join(cols)} FROM ({sql}) AS l{i} "
            f"LEFT JOIN ({sub}) AS r{i} USING (customer_id)"
        )
    return sql


def customer_profile(db: str, where: str = "") -> str:
    """One row per customer: its state, scores, open alert, the latest alert's evidence
    and this month's visits (purchase days) and spend. ``where``: a condition on
    customer_id put inside every part (``touchstream customer`` reads one customer).

    The state columns are every column of customer_state (sinks/tables.py), in order:
    a column appended there appears here at the next migrate."""
    cond = f" AND ({where})" if where else ""
    state = list(CUSTOMER_STATE.column_names)
    levels = sorted(ALERT_LEVEL.items(), key=lambda kv: kv[1])
    level_kinds = (
        f"transform(alert_level, {sql_array([v for _, v in levels])}, "
        f"{sql_array([k for k, _ in levels])}, '')"
    )
    latest = f"(at, episode, indexOf({sql_array(ALERT_LEVEL)}, kind))"
    alert_cols = ("kind", "at", "severity", "severity_label", "evidence", "message")
    joined = _left_joins(
        f"SELECT *, {_as_of(db)} AS as_of FROM {db}.customer_state FINAL WHERE 1{cond}",
        [*state, "as_of"],
        [
            (
                f"SELECT customer_id, {', '.join(PROFILE_SCORE_COLUMNS)} "
                f"FROM {db}.customer_scores WHERE 1{cond}",
                PROFILE_SCORE_COLUMNS,
            ),
            (
                "SELECT customer_id, "
                + ", ".join(f"argMax({c}, {latest}) AS alert_{c}" for c in alert_cols)
                + f" FROM {db}.alerts FINAL WHERE 1{cond} GROUP BY customer_id",
                [f"alert_{c}" for c in alert_cols],
            ),
            (
                f"SELECT customer_id, uniqExact(toDate(occurred_at)) AS month_visits, "
                f"sum(amount) AS month_spend FROM {db}.events FINAL "
                f"WHERE type = 'purchase' AND toStartOfMonth(occurred_at) = "
                f"toStartOfMonth({_as_of(db)}){cond} GROUP BY customer_id",
                ["month_visits", "month_spend"],
            ),
        ],
    )
    return f"""SELECT {", ".join(state)},
  {", ".join(PROFILE_SCORE_COLUMNS)},
  {level_kinds} AS open_alert,
  if(alert_level > 0, alert_severity, 0) AS open_alert_severity,
  if(alert_level > 0, alert_severity_label, '') AS open_alert_severity_label,
  alert_kind AS latest_alert, alert_at AS latest_alert_at, alert_evidence AS evidence,
  alert_message AS latest_alert_message,
  toStartOfMonth(as_of) AS month, month_visits AS visits_this_month,
  month_spend AS spend_this_month, as_of
FROM ({joined})"""


def lifecycle_funnel(db: str) -> str:
    started = (
        f"(SELECT uniqExact(customer_id, relationship) FROM {db}.transitions FINAL "
        f"WHERE to_stage = {sql_str(lifecycle.EXPLORATION)})"
    )
    return f"""SELECT to_stage AS stage,
  uniqExact(customer_id) AS customers,
  uniqExact(customer_id, relationship) AS relationships,
  round(100 * relationships / greatest({started}, 1), 1) AS pct_of_started
FROM {db}.transitions FINAL
GROUP BY stage
ORDER BY indexOf({sql_array(STAGES)}, stage)"""


def stage_durations(db: str) -> str:
    """Each stay in a stage: from the transition into it to the next transition (a
    completed stay) or to stream time (ongoing). Days; 0 where there is no stay."""

    def of(agg: str, cond: str) -> str:
        return f"if(countIf({cond}) > 0, round({agg}, 1), 0)"

    return f"""SELECT stage,
  countIf(ended) AS completed_stays,
  {of("avgIf(days, ended)", "ended")} AS avg_days,
  {of("quantileExactIf(0.5)(days, ended)", "ended")} AS median_days,
  {of("quantileExactIf(0.9)(days, ended)", "ended")} AS p90_days,
  countIf(NOT ended) AS ongoing_stays,
  {of("quantileExactIf(0.5)(days, NOT ended)", "NOT ended")} AS ongoing_median_days
FROM (
  SELECT stage, toUInt32(next_at) > 0 AS ended,
    (toUInt32(if(ended, next_at, as_of)) - toUInt32(entered)) / 86400 AS days
  FROM (
    SELECT customer_id, toUInt32(seq + 1) AS next_seq, to_stage AS stage, at AS entered,
      {_as_of(db)} AS as_of
    FROM {db}.transitions FINAL
  ) AS t
  LEFT JOIN (
    SELECT customer_id, seq AS next_seq, at AS next_at FROM {db}.transitions FINAL
  ) AS n USING (customer_id, next_seq)
)
GROUP BY stage
ORDER BY indexOf({sql_array(STAGES)}, stage)"""


def exit_patterns(db: str) -> str:
    """Ended relationships by the stage they ended in, beside long-term retention
    (customers whose latest transition took them into stability)."""
    patterns = [lifecycle.EXIT_PATTERN[s] for s in lifecycle.ACTIVE]
    counts = ", ".join(
        f"countIf(to_stage = {sql_str(lifecycle.CHURNED)} AND pattern = {sql_str(p)})"
        for p in patterns
    )
    return f"""SELECT pattern, relationships,
  round(100 * relationships / greatest(total, 1), 1) AS pct
FROM (
  SELECT {sql_array([*patterns, LONG_TERM_RETENTION])} AS names,
    arrayPushBack([{counts}], any(retained)) AS counts, arraySum(counts) AS total
  FROM {db}.transitions FINAL
  CROSS JOIN (
    SELECT countIf(latest = {sql_str(lifecycle.STABILITY)}) AS retained
    FROM (SELECT customer_id, argMax(to_stage, seq) AS latest
          FROM {db}.transitions FINAL GROUP BY customer_id)
  ) AS r
)
ARRAY JOIN names AS pattern, counts AS relationships"""


def defection_monthly(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> str:
    """Decline and churned alerts per month, by the defection type they name and the
    segment the customer was in when the month began."""
    return f"""SELECT month, if(segment = '', {sql_str(NO_SEGMENT_YET)}, segment) AS segment,
  kind, defection_type, count() AS alerts, sum(net_spend) AS net_spend
FROM (
  SELECT customer_id, kind, defection_type, net_spend, toStartOfMonth(at) AS month,
    addMonths(toStartOfMonth(at), -1) AS prev_month
  FROM {db}.alerts FINAL
  WHERE kind IN ({sql_str(lifecycle.DECLINE)}, {sql_str(lifecycle.CHURNED)})
) AS a
LEFT JOIN ({_segment_at_month_start(db, segment_map)}) AS s USING (customer_id, prev_month)
GROUP BY month, segment, kind, defection_type
ORDER BY month, segment, kind, defection_type"""


def retention_cohorts(db: str) -> str:
    """Of the customers whose first purchase fell in a month (the cohort), the share who
    bought in the month ``period`` months later (period 0: the cohort month, 100%)."""
    firsts = f"""SELECT customer_id, min(month) AS cohort, groupArray(month) AS months
    FROM (SELECT customer_id, toStartOfMonth(occurred_at) AS month
          FROM {db}.events FINAL WHERE type = 'purchase' GROUP BY customer_id, month)
    GROUP BY customer_id"""
    return f"""SELECT cohort, period, cohort_customers, retained,
  round(100 * retained / cohort_customers, 1) AS retention_pct
FROM (
  SELECT cohort, toRelativeMonthNum(m) - toRelativeMonthNum(cohort) AS period,
    count() AS retained
  FROM ({firsts})
  ARRAY JOIN months AS m
  GROUP BY cohort, period
) AS r
INNER JOIN (
  SELECT cohort, count() AS cohort_customers FROM ({firsts}) GROUP BY cohort
) AS c USING (cohort)
ORDER BY cohort, period"""


def satisfaction_monthly(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> str:
    """CSM (domain.md): the sum of the item scores / the number of items, per month and
    segment at the month's start; item scores are SATISFACTION_LEVELS."""
    names, scores = zip(*SATISFACTION_LEVELS.items(), strict=True)
    return f"""SELECT month, if(segment = '', {sql_str(NO_SEGMENT_YET)}, segment) AS segment,
  count() AS surveys, uniqExact(customer_id) AS customers, sum(score) AS score_sum,
  round(score_sum / surveys, 1) AS csm
FROM (
  SELECT customer_id, toStartOfMonth(occurred_at) AS month,
    addMonths(toStartOfMonth(occurred_at), -1) AS prev_month,
    transform(satisfaction, {sql_array(names)}, {sql_array(scores)}, 0) AS score
  FROM {db}.events FINAL
  WHERE type = 'survey' AND has({sql_array(names)}, satisfaction)
) AS v
LEFT JOIN ({_segment_at_month_start(db, segment_map)}) AS s USING (customer_id, prev_month)
GROUP BY month, segment
ORDER BY month, segment"""


def complaint_repurchase(db: str) -> str:
    """Buyers by the outcome of their latest complaint (customer_state.complaint_outcome)
    and the share who bought again: after that complaint was opened (of those who had
    bought before it), or for ``none`` on a second purchase day."""
    buyers = (
        f"SELECT customer_id, complaint_outcome, purchase_times, purchase_days "
        f"FROM (SELECT customer_id, complaint_outcome FROM {db}.customer_state FINAL) "
        f"AS s INNER JOIN ("
        f"SELECT customer_id, groupArray(occurred_at) AS purchase_times, "
        f"uniqExact(toDate(occurred_at)) AS purchase_days FROM {db}.events FINAL "
        f"WHERE type = 'purchase' GROUP BY customer_id) AS p USING (customer_id)"
    )
    # The latest complaint: the complaint_id opened last (its first report).
    latest = (
        f"SELECT customer_id, max(opened) AS complained_at FROM ("
        f"SELECT customer_id, complaint_id AS cid, "
        f"min(occurred_at) AS opened FROM {db}.events FINAL WHERE type = 'complaint' "
        f"GROUP BY customer_id, cid) GROUP BY customer_id"
    )
    joined = _left_joins(
        buyers,
        ["customer_id", "complaint_outcome", "purchase_times", "purchase_days"],
        [(latest, ["complained_at"])],
    )
    return f"""SELECT complaint_outcome, count() AS customers,
  countIf(repurchased) AS repurchased_customers,
  round(100 * repurchased_customers / customers, 1) AS repurchase_pct
FROM (
  SELECT complaint_outcome,
    if(complaint_outcome = 'none', purchase_days >= 2,
       arrayExists((t, c) -> t > c, purchase_times, complained)) AS repurchased,
    complaint_outcome = 'none' OR arrayExists((t, c) -> t < c, purchase_times, complained)
      AS bought_before
  FROM (SELECT *, replicate(complained_at, purchase_times) AS complained FROM ({joined}))
)
WHERE bought_before
GROUP BY complaint_outcome
ORDER BY indexOf({sql_array(OUTCOMES)}, complaint_outcome)"""


def value_matrix(db: str) -> str:
    """The customer value matrix (purchase days per year against the average purchase,
    docs/scoring.md) with each quadrant's size, revenue and key accounts."""
    return f"""SELECT quadrant, count() AS customers,
  round(100 * customers / (SELECT count() FROM {db}.customer_scores), 1) AS pct,
  sum(net_spend) AS net_spend,
  round(100 * toFloat64(net_spend)
        / (SELECT toFloat64(sum(net_spend)) FROM {db}.customer_scores), 1) AS pct_of_net_spend,
  round(avg(purchase_days), 1) AS avg_purchase_days,
  countIf(key_account) AS key_accounts
FROM {db}.customer_scores
GROUP BY quadrant
ORDER BY indexOf({sql_array(QUADRANTS)}, quadrant)"""


def key_accounts(db: str) -> str:
    """The key accounts (customer_scores.key_account, thresholds of docs/scoring.md)."""
    return f"""SELECT customer_id, net_spend, purchase_days, r_score, f_score, m_score,
  segment, quadrant, stage
FROM {db}.customer_scores
WHERE key_account
ORDER BY net_spend DESC, customer_id"""


Generator = Callable[[str, Sequence[Sequence[str]] | None], str]


def _plain(f: Callable[[str], str]) -> Generator:
    return lambda db, segment_map: f(db)


# name -> the view's SELECT; created after customer_rfm and customer_scores, in order.
ANALYST_VIEWS: dict[str, Generator] = {
    "customer_profile": _plain(customer_profile),
    "segment_monthly": segment_monthly,
    "lifecycle_funnel": _plain(lifecycle_funnel),
    "stage_durations": _plain(stage_durations),
    "exit_patterns": _plain(exit_patterns),
    "defection_monthly": defection_monthly,
    "retention_cohorts": _plain(retention_cohorts),
    "satisfaction_monthly": satisfaction_monthly,
    "complaint_repurchase": _plain(complaint_repurchase),
    "value_matrix": _plain(value_matrix),
    "key_accounts": _plain(key_accounts),
}


def analyst_views(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> dict[str, str]:
    return {name: make(db, segment_map) for name, make in ANALYST_VIEWS.items()}
