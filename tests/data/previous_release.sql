-- The ClickHouse DDL of the release before numbered migrations (git 9ee7333,
-- sinks/tables.py: table_migrations and view_definitions), database __DB__.
-- Statements are separated by lines holding only ";". Never edit: it is what that
-- release left in a database (tests/previous_release.py reads it).
CREATE TABLE IF NOT EXISTS __DB__.events (
  `event_id` String,
  `customer_id` String,
  `type` String,
  `occurred_at` DateTime('UTC'),
  `source` String,
  `amount` Decimal(18, 4),
  `currency` String,
  `attributes` String,
  `kafka_partition` UInt16,
  `kafka_offset` UInt64,
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(occurred_at) ORDER BY (customer_id, event_id)
;
CREATE TABLE IF NOT EXISTS __DB__.customer_state (
  `customer_id` String,
  `version` UInt64,
  `first_event_at` DateTime('UTC'),
  `last_event_at` DateTime('UTC'),
  `purchases` UInt32,
  `purchase_total` Decimal(18, 4),
  `refunds` UInt32,
  `refund_total` Decimal(18, 4),
  `net_spend` Decimal(18, 4),
  `first_purchase_at` Nullable(DateTime('UTC')),
  `last_purchase_at` Nullable(DateTime('UTC')),
  `frequency` UInt32,
  `recency` UInt32,
  `monetary_value` Float64,
  `stage` String,
  `stage_since` DateTime('UTC'),
  `declined_from` String,
  `relationships` UInt32,
  `exit_pattern` String,
  `defection_type` String,
  `defection_confidence` Float64,
  `alert_level` UInt8,
  `next_deadline` Nullable(DateTime('UTC')),
  `complaint_outcome` String,
  `p_alive` Nullable(Float64),
  `churn_probability_90d` Nullable(Float64),
  `expected_purchases_90d` Nullable(Float64),
  `predicted_clv_365d` Nullable(Float64),
  `model_version` UInt64,
  `scored_at` Nullable(DateTime('UTC'))
) ENGINE = ReplacingMergeTree(version) ORDER BY customer_id
;
CREATE TABLE IF NOT EXISTS __DB__.transitions (
  `customer_id` String,
  `seq` UInt32,
  `at` DateTime('UTC'),
  `from_stage` String,
  `to_stage` String,
  `reason` String,
  `relationship` UInt32,
  `pattern` String,
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY (customer_id, seq)
;
CREATE TABLE IF NOT EXISTS __DB__.alerts (
  `alert_id` String,
  `customer_id` String,
  `at` DateTime('UTC'),
  `kind` String,
  `episode` UInt32,
  `stage` String,
  `previous_stage` String,
  `defection_type` String,
  `confidence` Float64,
  `severity` UInt8,
  `severity_label` String,
  `net_spend` Decimal(18, 4),
  `evidence` String,
  `message` String,
  `schema_version` UInt16,
  `version` UInt64,
  `open_issues` String,
  `churn_probability_90d` Nullable(Float64),
  `value_at_risk` Nullable(Float64)
) ENGINE = ReplacingMergeTree(version) ORDER BY (customer_id, alert_id)
;
CREATE TABLE IF NOT EXISTS __DB__.dead_letters (
  `topic` String,
  `partition` UInt16,
  `offset` UInt64,
  `key` String,
  `raw` String,
  `reason` String,
  `received_at` DateTime('UTC'),
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY (topic, partition, offset)
;
CREATE TABLE IF NOT EXISTS __DB__.stream_clock (
  `partition` UInt16,
  `stream_time` DateTime('UTC'),
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY partition
;
CREATE TABLE IF NOT EXISTS __DB__.rfm_cutoffs (
  `as_of` DateTime('UTC'),
  `kind` String,
  `population` UInt64,
  `r1` Float64,
  `r2` Float64,
  `r3` Float64,
  `r4` Float64,
  `f1` Float64,
  `f2` Float64,
  `f3` Float64,
  `f4` Float64,
  `m1` Float64,
  `m2` Float64,
  `m3` Float64,
  `m4` Float64,
  `rate_median` Float64,
  `amount_median` Float64,
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY as_of
;
CREATE TABLE IF NOT EXISTS __DB__.rfm_sketches (
  `partition` UInt16,
  `sketch` String,
  `customers` UInt64,
  `published_at` DateTime('UTC'),
  `version` UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY partition
;
CREATE TABLE IF NOT EXISTS __DB__.model_params (
  `version` UInt64,
  `model` String,
  `chosen` UInt8,
  `params` String,
  `p1` Float64,
  `p2` Float64,
  `p3` Float64,
  `p4` Float64,
  `spend_p` Float64,
  `spend_q` Float64,
  `spend_v` Float64,
  `calibrated` UInt8,
  `w0` Float64,
  `w1` Float64,
  `w2` Float64,
  `w3` Float64,
  `w4` Float64,
  `w5` Float64,
  `fitted_at` DateTime('UTC'),
  `as_of` DateTime('UTC'),
  `log_likelihood` Float64,
  `n_customers` UInt64,
  `holdout_days` UInt32,
  `holdout_customers` UInt64,
  `holdout_log_loss` Float64,
  `holdout_predicted` Float64,
  `holdout_actual` Float64,
  `choice` String
) ENGINE = ReplacingMergeTree(version) ORDER BY (version, model)
;
CREATE VIEW IF NOT EXISTS __DB__.customer_rfm AS
SELECT
  customer_id,
  purchases,
  net_spend,
  first_purchase_at,
  last_purchase_at,
  frequency,
  recency,
  toInt32(toRelativeDayNum(as_of) - toRelativeDayNum(first_purchase_at)) AS T,
  monetary_value,
  toInt32(toRelativeDayNum(as_of) - toRelativeDayNum(last_purchase_at)) AS recency_days,
  as_of,
  stage
FROM (
  SELECT *, (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS as_of
  FROM __DB__.customer_state FINAL
)
WHERE purchases > 0
;
CREATE VIEW IF NOT EXISTS __DB__.customer_churn AS
SELECT customer_id, stage, net_spend, first_purchase_at, last_purchase_at, frequency, recency, toInt32(T) AS T, monetary_value, toInt32(T - tx) AS recency_days, as_of,
  if(model_version > 0, toNullable(pa_), NULL) AS p_alive,
  if(model_version > 0, toNullable(churn_), NULL) AS churn_probability_90d,
  if(model_version > 0, toNullable(e90_), NULL) AS expected_purchases_90d,
  if(model_version > 0 AND spend_q > 1, toNullable(clv_), NULL) AS predicted_clv_365d,
  model_version, model
FROM (SELECT *, if(calibrated, 1 / (1 + exp(-(w0 * 1 + w1 * log(least(greatest(churn_raw_, 1e-09), 0.999999999) / (1 - least(greatest(churn_raw_, 1e-09), 0.999999999))) + w2 * log(1 + T - tx) + w3 * log(1 + x) + w4 * log(1 + T - tx) * log(1 + x) + w5 * log(1 + T)))), churn_raw_) AS churn_, pa_ * g90_ AS e90_, if(spend_q > 1, ((1 - spend_p * x / (spend_p * x + spend_q - 1)) * (spend_v * spend_p / (spend_q - 1)) + spend_p * x / (spend_p * x + spend_q - 1) * m) * pa_ * g365_, nan) AS clv_ FROM (SELECT *, 1 - pa_ + pa_ * q90_ AS churn_raw_ FROM (SELECT *, multiIf(model = 'pareto_nbd', 1 / (1 + if(tx >= T, 0, p3 * (exp(logI_tx_ - log_alive_) - exp(logI_T_ - log_alive_)))), model = 'bgnbd' AND x <= 0, 1, 1 / (1 + p3 / (p4 + x + d_) * pow((p2 + T) / (p2 + tx), p1 + x))) AS pa_, if(model = 'pareto_nbd', both_ + M_T_ - both_ * M_Th_, pow((p2 + T) / (p2 + T + 90.0), p1 + x)) AS q90_, if(model = 'pareto_nbd', R_ / (p2 + T) * (p4 + T) * if(p3 = 1, -log((p4 + T) / (p4 + T + 90.0)), -(exp((p3 - 1) * log((p4 + T) / (p4 + T + 90.0))) - 1) / (p3 - 1)), C_ / (p3 - 1) * (1 - pow((p2 + T) / (p2 + T + 90.0), p3 - 1) * F90_)) AS g90_, if(model = 'pareto_nbd', R_ / (p2 + T) * (p4 + T) * if(p3 = 1, -log((p4 + T) / (p4 + T + 365.0)), -(exp((p3 - 1) * log((p4 + T) / (p4 + T + 365.0))) - 1) / (p3 - 1)), C_ / (p3 - 1) * (1 - pow((p2 + T) / (p2 + T + 365.0), p3 - 1) * F365_)) AS g365_ FROM (SELECT *, -R_ * log(aT_) - p3 * log(bT_) AS log_alive_, if(atx_ >= btx_, -R_ * log(atx_) - p3 * log(btx_) - log(R_ + p3) + log(Gtx_), (1 - R_) * log(atx_) - (p3 + 1) * log(btx_) - log(R_ + p3) + log(Gtx_)) AS logI_tx_, if(aT_ >= bT_, -R_ * log(aT_) - p3 * log(bT_) - log(R_ + p3) + log(GT_), (1 - R_) * log(aT_) - (p3 + 1) * log(bT_) - log(R_ + p3) + log(GT_)) AS logI_T_, if(aT_ >= bT_, p3 / (R_ + p3) * GT_, p3 * (aT_ / bT_) / (R_ + p3) * GT_) AS M_T_, if(aTh_ >= bTh_, p3 / (R_ + p3) * GTh_, p3 * (aTh_ / bTh_) / (R_ + p3) * GTh_) AS M_Th_, pow(aT_ / aTh_, R_) * pow(bT_ / bTh_, p3) AS both_ FROM (SELECT *, (1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), arrayCumSum(arrayMap(q -> log(abs(q)), QF90_)), arrayCumSum(arrayMap(q -> q < 0, QF90_))))) AS F90_, (1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), arrayCumSum(arrayMap(q -> log(abs(q)), QF365_)), arrayCumSum(arrayMap(q -> q < 0, QF365_))))) AS F365_, (1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), arrayCumSum(arrayMap(q -> log(abs(q)), QGtx_)), arrayCumSum(arrayMap(q -> q < 0, QGtx_))))) AS Gtx_, (1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), arrayCumSum(arrayMap(q -> log(abs(q)), QGT_)), arrayCumSum(arrayMap(q -> q < 0, QGT_))))) AS GT_, (1 + arraySum(arrayMap((l, n) -> if(n % 2 = 1, -exp(l), exp(l)), arrayCumSum(arrayMap(q -> log(abs(q)), QGTh_)), arrayCumSum(arrayMap(q -> q < 0, QGTh_))))) AS GTh_ FROM (SELECT *, arrayMap(j -> ((A_) + j) * ((B_) + j) / (((C_) + j) * (j + 1)) * (z90_), range(if(model != 'pareto_nbd', if(z90_ <= 0, 1, toUInt32(least(5000, ceil(log(1e-15 * (1 - z90_)) / log(z90_)) + ceil(abs(A_) + abs(B_)) + 1))), 1))) AS QF90_, arrayMap(j -> ((A_) + j) * ((B_) + j) / (((C_) + j) * (j + 1)) * (z365_), range(if(model != 'pareto_nbd', if(z365_ <= 0, 1, toUInt32(least(5000, ceil(log(1e-15 * (1 - z365_)) / log(z365_)) + ceil(abs(A_) + abs(B_)) + 1))), 1))) AS QF365_, arrayMap(j -> ((utx_) + j) * ((1) + j) / (((R_ + p3 + 1) + j) * (j + 1)) * (wtx_), range(if(model != 'pareto_nbd', 1, if(wtx_ <= 0, 1, toUInt32(least(5000, ceil(log(1e-15 * (1 - wtx_)) / log(wtx_)) + ceil(abs(utx_) + abs(1)) + 1)))))) AS QGtx_, arrayMap(j -> ((uT_) + j) * ((1) + j) / (((R_ + p3 + 1) + j) * (j + 1)) * (wT_), range(if(model != 'pareto_nbd', 1, if(wT_ <= 0, 1, toUInt32(least(5000, ceil(log(1e-15 * (1 - wT_)) / log(wT_)) + ceil(abs(uT_) + abs(1)) + 1)))))) AS QGT_, arrayMap(j -> ((uTh_) + j) * ((1) + j) / (((R_ + p3 + 1) + j) * (j + 1)) * (wTh_), range(if(model != 'pareto_nbd', 1, if(wTh_ <= 0, 1, toUInt32(least(5000, ceil(log(1e-15 * (1 - wTh_)) / log(wTh_)) + ceil(abs(uTh_) + abs(1)) + 1)))))) AS QGTh_ FROM (SELECT *, if(atx_ >= btx_, R_, p3 + 1) AS utx_, if(atx_ >= btx_, (atx_ - btx_) / atx_, (btx_ - atx_) / btx_) AS wtx_, if(aT_ >= bT_, R_, p3 + 1) AS uT_, if(aT_ >= bT_, (aT_ - bT_) / aT_, (bT_ - aT_) / bT_) AS wT_, if(aTh_ >= bTh_, R_, p3 + 1) AS uTh_, if(aTh_ >= bTh_, (aTh_ - bTh_) / aTh_, (bTh_ - aTh_) / bTh_) AS wTh_ FROM (SELECT *, if(model = 'bgnbd', -1, 0) AS d_, p1 + x AS R_, p3 + p4 + d_ - p1 AS A_, p3 - 1 AS B_, p3 + p4 + x + d_ AS C_, 90.0 / (p2 + T + 90.0) AS z90_, 365.0 / (p2 + T + 365.0) AS z365_, p2 + tx AS atx_, p2 + T AS aT_, p2 + T + 90.0 AS aTh_, p4 + tx AS btx_, p4 + T AS bT_, p4 + T + 90.0 AS bTh_ FROM (SELECT customer_id, stage, net_spend, first_purchase_at, last_purchase_at,
    frequency, recency, monetary_value, as_of,
    toFloat64(frequency) AS x, toFloat64(recency) AS tx,
    toFloat64(assumeNotNull(toRelativeDayNum(as_of)
      - toRelativeDayNum(assumeNotNull(first_purchase_at)))) AS T,
    monetary_value AS m,
    model_version, model, p1, p2, p3, p4, spend_p, spend_q, spend_v, calibrated, w0, w1, w2, w3, w4, w5
  FROM (
    SELECT customer_id, stage, net_spend, first_purchase_at, last_purchase_at, frequency,
      recency, monetary_value,
      (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS as_of, 1 AS k_
    FROM __DB__.customer_state FINAL
    WHERE purchases > 0
  ) AS s ANY LEFT JOIN (
    SELECT 1 AS k_, version AS model_version, model, p1, p2, p3, p4, spend_p, spend_q, spend_v, calibrated, w0, w1, w2, w3, w4, w5 FROM __DB__.model_params FINAL WHERE chosen = 1 ORDER BY version DESC LIMIT 1
  ) AS mp USING k_)))))))))
;
CREATE VIEW IF NOT EXISTS __DB__.customer_scores AS
SELECT
  customer_id, stage, purchase_days, net_spend, last_purchase_day,
  r_score, f_score, m_score,
  transform(r_score * 10 + f_score, [11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54, 55], ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal', 'promising', 'potential_loyalists', 'potential_loyalists', 'loyal', 'loyal', 'new', 'potential_loyalists', 'potential_loyalists', 'champions', 'champions'], '') AS segment,
  multiIf(rate >= rate_median AND amount >= amount_median, 'best',
          rate >= rate_median, 'frequent_low_spend',
          amount >= amount_median, 'rare_high_spend', 'uncertain') AS quadrant,
  m_score >= 5 AND stream_day - first_purchase_day >= 365
    AND purchase_days >= 4 AND stage NOT IN ('decline', 'churned') AS key_account,
  purchase_days = 1 AND stream_day - first_purchase_day >= 90
    AS transaction_buyer,
  cutoffs_as_of, population,
  p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version
FROM (
  SELECT *,
    1 + (last_purchase_day >= r1) + (last_purchase_day >= r2) + (last_purchase_day >= r3) + (last_purchase_day >= r4) AS r_score,
    1 + (purchase_days >= f1) + (purchase_days >= f2) + (purchase_days >= f3) + (purchase_days >= f4) AS f_score,
    1 + (toFloat64(net_spend) >= m1) + (toFloat64(net_spend) >= m2) + (toFloat64(net_spend) >= m3) + (toFloat64(net_spend) >= m4) AS m_score,
    purchase_days * 365 / greatest(last_purchase_day - first_purchase_day + 1, 365)
      AS rate,
    toFloat64(net_spend) / purchase_days AS amount
  FROM (
    SELECT customer_id, stage, net_spend, frequency + 1 AS purchase_days,
      toUInt32(toDate(assumeNotNull(first_purchase_at))) AS first_purchase_day,
      toUInt32(toDate(assumeNotNull(last_purchase_at))) AS last_purchase_day,
      (SELECT toUInt32(toDate(max(stream_time))) FROM __DB__.stream_clock FINAL) AS stream_day,
      p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version
    FROM __DB__.customer_churn
  ) AS s
  CROSS JOIN (
    SELECT as_of AS cutoffs_as_of, population, r1, r2, r3, r4, f1, f2, f3, f4,
      m1, m2, m3, m4, rate_median, amount_median
    FROM __DB__.rfm_cutoffs FINAL ORDER BY as_of DESC LIMIT 1
  ) AS c
)
;
CREATE VIEW IF NOT EXISTS __DB__.customer_profile AS
SELECT customer_id, version, first_event_at, last_event_at, purchases, purchase_total, refunds, refund_total, net_spend, first_purchase_at, last_purchase_at, frequency, recency, monetary_value, stage, stage_since, declined_from, relationships, exit_pattern, defection_type, defection_confidence, alert_level, next_deadline, complaint_outcome, p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version, scored_at,
  r_score, f_score, m_score, segment, quadrant, key_account, transaction_buyer,
  transform(alert_level, [1, 2, 3], ['churn_risk', 'decline', 'churned'], '') AS open_alert,
  if(alert_level > 0, alert_severity, 0) AS open_alert_severity,
  if(alert_level > 0, alert_severity_label, '') AS open_alert_severity_label,
  alert_kind AS latest_alert, alert_at AS latest_alert_at, alert_evidence AS evidence,
  alert_message AS latest_alert_message,
  toStartOfMonth(as_of) AS month, month_visits AS visits_this_month,
  month_spend AS spend_this_month, as_of
FROM (SELECT customer_id, version, first_event_at, last_event_at, purchases, purchase_total, refunds, refund_total, net_spend, first_purchase_at, last_purchase_at, frequency, recency, monetary_value, stage, stage_since, declined_from, relationships, exit_pattern, defection_type, defection_confidence, alert_level, next_deadline, complaint_outcome, p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version, scored_at, as_of, r_score, f_score, m_score, segment, quadrant, key_account, transaction_buyer, alert_kind, alert_at, alert_severity, alert_severity_label, alert_evidence, alert_message, month_visits, month_spend FROM (SELECT customer_id, version, first_event_at, last_event_at, purchases, purchase_total, refunds, refund_total, net_spend, first_purchase_at, last_purchase_at, frequency, recency, monetary_value, stage, stage_since, declined_from, relationships, exit_pattern, defection_type, defection_confidence, alert_level, next_deadline, complaint_outcome, p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version, scored_at, as_of, r_score, f_score, m_score, segment, quadrant, key_account, transaction_buyer, alert_kind, alert_at, alert_severity, alert_severity_label, alert_evidence, alert_message FROM (SELECT customer_id, version, first_event_at, last_event_at, purchases, purchase_total, refunds, refund_total, net_spend, first_purchase_at, last_purchase_at, frequency, recency, monetary_value, stage, stage_since, declined_from, relationships, exit_pattern, defection_type, defection_confidence, alert_level, next_deadline, complaint_outcome, p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version, scored_at, as_of, r_score, f_score, m_score, segment, quadrant, key_account, transaction_buyer FROM (SELECT *, (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS as_of FROM __DB__.customer_state FINAL WHERE 1) AS l0 LEFT JOIN (SELECT customer_id, r_score, f_score, m_score, segment, quadrant, key_account, transaction_buyer FROM __DB__.customer_scores WHERE 1) AS r0 USING (customer_id)) AS l1 LEFT JOIN (SELECT customer_id, argMax(kind, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_kind, argMax(at, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_at, argMax(severity, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_severity, argMax(severity_label, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_severity_label, argMax(evidence, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_evidence, argMax(message, (at, episode, indexOf(['churn_risk', 'decline', 'churned'], kind))) AS alert_message FROM __DB__.alerts FINAL WHERE 1 GROUP BY customer_id) AS r1 USING (customer_id)) AS l2 LEFT JOIN (SELECT customer_id, uniqExact(toDate(occurred_at)) AS month_visits, sum(amount) AS month_spend FROM __DB__.events FINAL WHERE type = 'purchase' AND toStartOfMonth(occurred_at) = toStartOfMonth((SELECT max(stream_time) FROM __DB__.stream_clock FINAL)) GROUP BY customer_id) AS r2 USING (customer_id))
;
CREATE VIEW IF NOT EXISTS __DB__.segment_monthly AS
SELECT month, segment, count() AS customers, countIf(bought) AS buyers,
  round(sum(revenue), 2) AS revenue
FROM (SELECT month, customer_id, purchase_days, last_day, bought, revenue,
    r_score, f_score, transform(r_score * 10 + f_score, [11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54, 55], ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal', 'promising', 'potential_loyalists', 'potential_loyalists', 'loyal', 'loyal', 'new', 'potential_loyalists', 'potential_loyalists', 'champions', 'champions'], '') AS segment
  FROM (
    SELECT month, customer_id, purchase_days, last_day, bought, revenue,
      1 + (last_day > r1) + (last_day > r2) + (last_day > r3) + (last_day > r4) AS r_score, 1 + (purchase_days > f1) + (purchase_days > f2) + (purchase_days > f3) + (purchase_days > f4) AS f_score
    FROM (
      SELECT month, groupArray(customer_id) AS ids, groupArray(purchase_days) AS fs,
        groupArray(last_day) AS rs, groupArray(bought) AS bs, groupArray(revenue) AS revs,
        count() AS n, arraySort(rs) AS rs_sorted, arraySort(fs) AS fs_sorted,
        rs_sorted[intDiv(1 * n + 4, 5)] AS r1, rs_sorted[intDiv(2 * n + 4, 5)] AS r2, rs_sorted[intDiv(3 * n + 4, 5)] AS r3, rs_sorted[intDiv(4 * n + 4, 5)] AS r4,
        fs_sorted[intDiv(1 * n + 4, 5)] AS f1, fs_sorted[intDiv(2 * n + 4, 5)] AS f2, fs_sorted[intDiv(3 * n + 4, 5)] AS f3, fs_sorted[intDiv(4 * n + 4, 5)] AS f4
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
        FROM (SELECT customer_id,
      groupArrayIf(day, bought) AS days,
      groupArray(day) AS amount_days,
      groupArray(net) AS amounts
    FROM (
      SELECT customer_id, toUInt32(toDate(occurred_at)) AS day,
        countIf(type = 'purchase') > 0 AS bought,
        toFloat64(sumIf(amount, type = 'purchase')) - toFloat64(sumIf(amount, type = 'refund'))
          AS net
      FROM __DB__.events FINAL
      WHERE type IN ('purchase', 'refund')
      GROUP BY customer_id, day
    )
    GROUP BY customer_id
    HAVING length(days) > 0) AS h
        CROSS JOIN (SELECT month, toUInt32(month) AS start_day,
      least(toUInt32(addMonths(month, 1)) - 1, toUInt32(toDate(as_of))) AS end_day
    FROM (
      SELECT addMonths(first_month, arrayJoin(range(toUInt64(n)))) AS month, as_of
      FROM (
        SELECT toStartOfMonth(min(occurred_at)) AS first_month, any(now_) AS as_of,
          greatest(toRelativeMonthNum(as_of) - toRelativeMonthNum(min(occurred_at)) + 1, 0)
            AS n
        FROM (SELECT occurred_at, (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS now_
              FROM __DB__.events FINAL WHERE type = 'purchase')
      )
    )) AS m
        WHERE purchase_days > 0
      )
      GROUP BY month
    )
    ARRAY JOIN ids AS customer_id, fs AS purchase_days, rs AS last_day, bs AS bought,
      revs AS revenue
  ))
GROUP BY month, segment
ORDER BY month, segment
;
CREATE VIEW IF NOT EXISTS __DB__.lifecycle_funnel AS
SELECT to_stage AS stage,
  uniqExact(customer_id) AS customers,
  uniqExact(customer_id, relationship) AS relationships,
  round(100 * relationships / greatest((SELECT uniqExact(customer_id, relationship) FROM __DB__.transitions FINAL WHERE to_stage = 'exploration'), 1), 1) AS pct_of_started
FROM __DB__.transitions FINAL
GROUP BY stage
ORDER BY indexOf(['exploration', 'formation', 'stability', 'decline', 'churned'], stage)
;
CREATE VIEW IF NOT EXISTS __DB__.stage_durations AS
SELECT stage,
  countIf(ended) AS completed_stays,
  if(countIf(ended) > 0, round(avgIf(days, ended), 1), 0) AS avg_days,
  if(countIf(ended) > 0, round(quantileExactIf(0.5)(days, ended), 1), 0) AS median_days,
  if(countIf(ended) > 0, round(quantileExactIf(0.9)(days, ended), 1), 0) AS p90_days,
  countIf(NOT ended) AS ongoing_stays,
  if(countIf(NOT ended) > 0, round(quantileExactIf(0.5)(days, NOT ended), 1), 0) AS ongoing_median_days
FROM (
  SELECT stage, toUInt32(next_at) > 0 AS ended,
    (toUInt32(if(ended, next_at, as_of)) - toUInt32(entered)) / 86400 AS days
  FROM (
    SELECT customer_id, toUInt32(seq + 1) AS next_seq, to_stage AS stage, at AS entered,
      (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS as_of
    FROM __DB__.transitions FINAL
  ) AS t
  LEFT JOIN (
    SELECT customer_id, seq AS next_seq, at AS next_at FROM __DB__.transitions FINAL
  ) AS n USING (customer_id, next_seq)
)
GROUP BY stage
ORDER BY indexOf(['exploration', 'formation', 'stability', 'decline', 'churned'], stage)
;
CREATE VIEW IF NOT EXISTS __DB__.exit_patterns AS
SELECT pattern, relationships,
  round(100 * relationships / greatest(total, 1), 1) AS pct
FROM (
  SELECT ['early_abortion', 'mid_way_death', 'premature_exit', 'long_term_retention'] AS names,
    arrayPushBack([countIf(to_stage = 'churned' AND pattern = 'early_abortion'), countIf(to_stage = 'churned' AND pattern = 'mid_way_death'), countIf(to_stage = 'churned' AND pattern = 'premature_exit')], any(retained)) AS counts, arraySum(counts) AS total
  FROM __DB__.transitions FINAL
  CROSS JOIN (
    SELECT countIf(latest = 'stability') AS retained
    FROM (SELECT customer_id, argMax(to_stage, seq) AS latest
          FROM __DB__.transitions FINAL GROUP BY customer_id)
  ) AS r
)
ARRAY JOIN names AS pattern, counts AS relationships
;
CREATE VIEW IF NOT EXISTS __DB__.defection_monthly AS
SELECT month, if(segment = '', '(none yet)', segment) AS segment,
  kind, defection_type, count() AS alerts, sum(net_spend) AS net_spend
FROM (
  SELECT customer_id, kind, defection_type, net_spend, toStartOfMonth(at) AS month,
    addMonths(toStartOfMonth(at), -1) AS prev_month
  FROM __DB__.alerts FINAL
  WHERE kind IN ('decline', 'churned')
) AS a
LEFT JOIN (SELECT customer_id, month AS prev_month, segment FROM (SELECT month, customer_id, purchase_days, last_day, bought, revenue,
    r_score, f_score, transform(r_score * 10 + f_score, [11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54, 55], ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal', 'promising', 'potential_loyalists', 'potential_loyalists', 'loyal', 'loyal', 'new', 'potential_loyalists', 'potential_loyalists', 'champions', 'champions'], '') AS segment
  FROM (
    SELECT month, customer_id, purchase_days, last_day, bought, revenue,
      1 + (last_day > r1) + (last_day > r2) + (last_day > r3) + (last_day > r4) AS r_score, 1 + (purchase_days > f1) + (purchase_days > f2) + (purchase_days > f3) + (purchase_days > f4) AS f_score
    FROM (
      SELECT month, groupArray(customer_id) AS ids, groupArray(purchase_days) AS fs,
        groupArray(last_day) AS rs, groupArray(bought) AS bs, groupArray(revenue) AS revs,
        count() AS n, arraySort(rs) AS rs_sorted, arraySort(fs) AS fs_sorted,
        rs_sorted[intDiv(1 * n + 4, 5)] AS r1, rs_sorted[intDiv(2 * n + 4, 5)] AS r2, rs_sorted[intDiv(3 * n + 4, 5)] AS r3, rs_sorted[intDiv(4 * n + 4, 5)] AS r4,
        fs_sorted[intDiv(1 * n + 4, 5)] AS f1, fs_sorted[intDiv(2 * n + 4, 5)] AS f2, fs_sorted[intDiv(3 * n + 4, 5)] AS f3, fs_sorted[intDiv(4 * n + 4, 5)] AS f4
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
        FROM (SELECT customer_id,
      groupArrayIf(day, bought) AS days,
      groupArray(day) AS amount_days,
      groupArray(net) AS amounts
    FROM (
      SELECT customer_id, toUInt32(toDate(occurred_at)) AS day,
        countIf(type = 'purchase') > 0 AS bought,
        toFloat64(sumIf(amount, type = 'purchase')) - toFloat64(sumIf(amount, type = 'refund'))
          AS net
      FROM __DB__.events FINAL
      WHERE type IN ('purchase', 'refund')
      GROUP BY customer_id, day
    )
    GROUP BY customer_id
    HAVING length(days) > 0) AS h
        CROSS JOIN (SELECT month, toUInt32(month) AS start_day,
      least(toUInt32(addMonths(month, 1)) - 1, toUInt32(toDate(as_of))) AS end_day
    FROM (
      SELECT addMonths(first_month, arrayJoin(range(toUInt64(n)))) AS month, as_of
      FROM (
        SELECT toStartOfMonth(min(occurred_at)) AS first_month, any(now_) AS as_of,
          greatest(toRelativeMonthNum(as_of) - toRelativeMonthNum(min(occurred_at)) + 1, 0)
            AS n
        FROM (SELECT occurred_at, (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS now_
              FROM __DB__.events FINAL WHERE type = 'purchase')
      )
    )) AS m
        WHERE purchase_days > 0
      )
      GROUP BY month
    )
    ARRAY JOIN ids AS customer_id, fs AS purchase_days, rs AS last_day, bs AS bought,
      revs AS revenue
  ))) AS s USING (customer_id, prev_month)
GROUP BY month, segment, kind, defection_type
ORDER BY month, segment, kind, defection_type
;
CREATE VIEW IF NOT EXISTS __DB__.retention_cohorts AS
SELECT cohort, period, cohort_customers, retained,
  round(100 * retained / cohort_customers, 1) AS retention_pct
FROM (
  SELECT cohort, toRelativeMonthNum(m) - toRelativeMonthNum(cohort) AS period,
    count() AS retained
  FROM (SELECT customer_id, min(month) AS cohort, groupArray(month) AS months
    FROM (SELECT customer_id, toStartOfMonth(occurred_at) AS month
          FROM __DB__.events FINAL WHERE type = 'purchase' GROUP BY customer_id, month)
    GROUP BY customer_id)
  ARRAY JOIN months AS m
  GROUP BY cohort, period
) AS r
INNER JOIN (
  SELECT cohort, count() AS cohort_customers FROM (SELECT customer_id, min(month) AS cohort, groupArray(month) AS months
    FROM (SELECT customer_id, toStartOfMonth(occurred_at) AS month
          FROM __DB__.events FINAL WHERE type = 'purchase' GROUP BY customer_id, month)
    GROUP BY customer_id) GROUP BY cohort
) AS c USING (cohort)
ORDER BY cohort, period
;
CREATE VIEW IF NOT EXISTS __DB__.satisfaction_monthly AS
SELECT month, if(segment = '', '(none yet)', segment) AS segment,
  count() AS surveys, uniqExact(customer_id) AS customers, sum(score) AS score_sum,
  round(score_sum / surveys, 1) AS csm
FROM (
  SELECT customer_id, toStartOfMonth(occurred_at) AS month,
    addMonths(toStartOfMonth(occurred_at), -1) AS prev_month,
    transform(visitParamExtractString(attributes, 'satisfaction'), ['very_satisfied', 'satisfied', 'fairly_satisfied', 'neutral', 'fairly_dissatisfied', 'dissatisfied', 'very_dissatisfied'],
              [90, 60, 30, 0, -30, -60, -90], 0) AS score
  FROM __DB__.events FINAL
  WHERE type = 'survey'
    AND has(['very_satisfied', 'satisfied', 'fairly_satisfied', 'neutral', 'fairly_dissatisfied', 'dissatisfied', 'very_dissatisfied'], visitParamExtractString(attributes, 'satisfaction'))
) AS v
LEFT JOIN (SELECT customer_id, month AS prev_month, segment FROM (SELECT month, customer_id, purchase_days, last_day, bought, revenue,
    r_score, f_score, transform(r_score * 10 + f_score, [11, 12, 13, 14, 15, 21, 22, 23, 24, 25, 31, 32, 33, 34, 35, 41, 42, 43, 44, 45, 51, 52, 53, 54, 55], ['hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'hibernating', 'hibernating', 'at_risk', 'at_risk', 'cant_lose', 'about_to_sleep', 'about_to_sleep', 'need_attention', 'loyal', 'loyal', 'promising', 'potential_loyalists', 'potential_loyalists', 'loyal', 'loyal', 'new', 'potential_loyalists', 'potential_loyalists', 'champions', 'champions'], '') AS segment
  FROM (
    SELECT month, customer_id, purchase_days, last_day, bought, revenue,
      1 + (last_day > r1) + (last_day > r2) + (last_day > r3) + (last_day > r4) AS r_score, 1 + (purchase_days > f1) + (purchase_days > f2) + (purchase_days > f3) + (purchase_days > f4) AS f_score
    FROM (
      SELECT month, groupArray(customer_id) AS ids, groupArray(purchase_days) AS fs,
        groupArray(last_day) AS rs, groupArray(bought) AS bs, groupArray(revenue) AS revs,
        count() AS n, arraySort(rs) AS rs_sorted, arraySort(fs) AS fs_sorted,
        rs_sorted[intDiv(1 * n + 4, 5)] AS r1, rs_sorted[intDiv(2 * n + 4, 5)] AS r2, rs_sorted[intDiv(3 * n + 4, 5)] AS r3, rs_sorted[intDiv(4 * n + 4, 5)] AS r4,
        fs_sorted[intDiv(1 * n + 4, 5)] AS f1, fs_sorted[intDiv(2 * n + 4, 5)] AS f2, fs_sorted[intDiv(3 * n + 4, 5)] AS f3, fs_sorted[intDiv(4 * n + 4, 5)] AS f4
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
        FROM (SELECT customer_id,
      groupArrayIf(day, bought) AS days,
      groupArray(day) AS amount_days,
      groupArray(net) AS amounts
    FROM (
      SELECT customer_id, toUInt32(toDate(occurred_at)) AS day,
        countIf(type = 'purchase') > 0 AS bought,
        toFloat64(sumIf(amount, type = 'purchase')) - toFloat64(sumIf(amount, type = 'refund'))
          AS net
      FROM __DB__.events FINAL
      WHERE type IN ('purchase', 'refund')
      GROUP BY customer_id, day
    )
    GROUP BY customer_id
    HAVING length(days) > 0) AS h
        CROSS JOIN (SELECT month, toUInt32(month) AS start_day,
      least(toUInt32(addMonths(month, 1)) - 1, toUInt32(toDate(as_of))) AS end_day
    FROM (
      SELECT addMonths(first_month, arrayJoin(range(toUInt64(n)))) AS month, as_of
      FROM (
        SELECT toStartOfMonth(min(occurred_at)) AS first_month, any(now_) AS as_of,
          greatest(toRelativeMonthNum(as_of) - toRelativeMonthNum(min(occurred_at)) + 1, 0)
            AS n
        FROM (SELECT occurred_at, (SELECT max(stream_time) FROM __DB__.stream_clock FINAL) AS now_
              FROM __DB__.events FINAL WHERE type = 'purchase')
      )
    )) AS m
        WHERE purchase_days > 0
      )
      GROUP BY month
    )
    ARRAY JOIN ids AS customer_id, fs AS purchase_days, rs AS last_day, bs AS bought,
      revs AS revenue
  ))) AS s USING (customer_id, prev_month)
GROUP BY month, segment
ORDER BY month, segment
;
CREATE VIEW IF NOT EXISTS __DB__.complaint_repurchase AS
SELECT complaint_outcome, count() AS customers,
  countIf(repurchased) AS repurchased_customers,
  round(100 * repurchased_customers / customers, 1) AS repurchase_pct
FROM (
  SELECT complaint_outcome,
    if(complaint_outcome = 'none', purchase_days >= 2,
       arrayExists((t, c) -> t > c, purchase_times, complained)) AS repurchased,
    complaint_outcome = 'none' OR arrayExists((t, c) -> t < c, purchase_times, complained)
      AS bought_before
  FROM (SELECT *, replicate(complained_at, purchase_times) AS complained FROM (SELECT customer_id, complaint_outcome, purchase_times, purchase_days, complained_at FROM (SELECT customer_id, complaint_outcome, purchase_times, purchase_days FROM (SELECT customer_id, complaint_outcome FROM __DB__.customer_state FINAL) AS s INNER JOIN (SELECT customer_id, groupArray(occurred_at) AS purchase_times, uniqExact(toDate(occurred_at)) AS purchase_days FROM __DB__.events FINAL WHERE type = 'purchase' GROUP BY customer_id) AS p USING (customer_id)) AS l0 LEFT JOIN (SELECT customer_id, max(opened) AS complained_at FROM (SELECT customer_id, visitParamExtractString(attributes, 'complaint_id') AS cid, min(occurred_at) AS opened FROM __DB__.events FINAL WHERE type = 'complaint' GROUP BY customer_id, cid) GROUP BY customer_id) AS r0 USING (customer_id)))
)
WHERE bought_before
GROUP BY complaint_outcome
ORDER BY indexOf(['none', 'unresolved', 'resolved', 'resolved_quickly'], complaint_outcome)
;
CREATE VIEW IF NOT EXISTS __DB__.value_matrix AS
SELECT quadrant, count() AS customers,
  round(100 * customers / (SELECT count() FROM __DB__.customer_scores), 1) AS pct,
  sum(net_spend) AS net_spend,
  round(100 * toFloat64(net_spend)
        / (SELECT toFloat64(sum(net_spend)) FROM __DB__.customer_scores), 1) AS pct_of_net_spend,
  round(avg(purchase_days), 1) AS avg_purchase_days,
  countIf(key_account) AS key_accounts
FROM __DB__.customer_scores
GROUP BY quadrant
ORDER BY indexOf(['best', 'frequent_low_spend', 'rare_high_spend', 'uncertain'], quadrant)
;
CREATE VIEW IF NOT EXISTS __DB__.key_accounts AS
SELECT customer_id, net_spend, purchase_days, r_score, f_score, m_score,
  segment, quadrant, stage
FROM __DB__.customer_scores
WHERE key_account
ORDER BY net_spend DESC, customer_id
