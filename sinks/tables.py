"""The ClickHouse tables: one DDL for ClickHouse 18.16, a current server and chdb.

Every table is a ReplacingMergeTree keyed by its natural key with a ``version`` column,
so a replay or a retry that writes a row again never double counts: query with FINAL
(or argMax by version) to see one row per key. docs/analysts.md describes each table.
"""

from __future__ import annotations

from dataclasses import dataclass

DT = "DateTime('UTC')"
MONEY = "Decimal(18, 4)"


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]
    engine: str
    comment: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    def ddl(self, db: str) -> str:
        cols = ",\n  ".join(f"`{c}` {t}" for c, t in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {db}.{self.name} (\n  {cols}\n) ENGINE = {self.engine}"


EVENTS = Table(
    "events",
    (
        ("event_id", "String"),
        ("customer_id", "String"),
        ("type", "String"),
        ("occurred_at", DT),
        ("source", "String"),
        ("amount", MONEY),  # purchases and refunds; 0 for other types
        ("currency", "String"),
        ("attributes", "String"),  # the type's other fields, as JSON
        ("kafka_partition", "UInt16"),
        ("kafka_offset", "UInt64"),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) PARTITION BY toYYYYMM(occurred_at) "
    "ORDER BY (customer_id, event_id)",
    "validated events, one row per (customer_id, event_id)",
)

CUSTOMER_STATE = Table(
    "customer_state",
    (
        ("customer_id", "String"),
        ("version", "UInt64"),
        ("first_event_at", DT),
        ("last_event_at", DT),
        ("purchases", "UInt32"),
        ("purchase_total", MONEY),
        ("refunds", "UInt32"),
        ("refund_total", MONEY),
        ("net_spend", MONEY),
        ("first_purchase_at", f"Nullable({DT})"),
        ("last_purchase_at", f"Nullable({DT})"),
        ("frequency", "UInt32"),
        ("recency", "UInt32"),
        ("monetary_value", "Float64"),
        ("stage", "String"),  # '' before the first purchase
        ("stage_since", DT),
        ("declined_from", "String"),
        ("relationships", "UInt32"),
        ("exit_pattern", "String"),
        ("defection_type", "String"),
        ("defection_confidence", "Float64"),
        ("alert_level", "UInt8"),
        ("next_deadline", f"Nullable({DT})"),
    ),
    "ReplacingMergeTree(version) ORDER BY customer_id",
    "current state per customer; the highest version wins",
)

DEAD_LETTERS = Table(
    "dead_letters",
    (
        ("topic", "String"),
        ("partition", "UInt16"),
        ("offset", "UInt64"),
        ("key", "String"),
        ("raw", "String"),
        ("reason", "String"),
        ("received_at", DT),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY (topic, partition, offset)",
    "messages that are not valid events, with the reason",
)

STREAM_CLOCK = Table(
    "stream_clock",
    (
        ("partition", "UInt16"),
        ("stream_time", DT),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY partition",
    "stream time (latest event time seen) per input partition",
)

TRANSITIONS = Table(
    "transitions",
    (
        ("customer_id", "String"),
        ("seq", "UInt32"),
        ("at", DT),
        ("from_stage", "String"),
        ("to_stage", "String"),
        ("reason", "String"),
        ("relationship", "UInt32"),
        ("pattern", "String"),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY (customer_id, seq)",
    "every lifecycle stage change, numbered per customer",
)

ALERTS = Table(
    "alerts",
    (
        ("alert_id", "String"),
        ("customer_id", "String"),
        ("at", DT),
        ("kind", "String"),
        ("episode", "UInt32"),
        ("stage", "String"),
        ("previous_stage", "String"),
        ("defection_type", "String"),
        ("confidence", "Float64"),
        ("severity", "UInt8"),
        ("severity_label", "String"),
        ("net_spend", MONEY),
        ("evidence", "String"),  # JSON array of strings
        ("message", "String"),
        ("schema_version", "UInt16"),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY (customer_id, alert_id)",
    "churn alerts, as sent to the alerts topic",
)

TABLES: tuple[Table, ...] = (
    EVENTS, CUSTOMER_STATE, TRANSITIONS, ALERTS, DEAD_LETTERS, STREAM_CLOCK
)
BY_NAME = {t.name: t for t in TABLES}


def views(db: str) -> list[str]:
    # T and recency_days are computed at query time against stream time, so a customer's
    # row never goes stale and processing order never matters.
    return [
        f"""CREATE VIEW IF NOT EXISTS {db}.customer_rfm AS
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
  SELECT *, (SELECT max(stream_time) FROM {db}.stream_clock FINAL) AS as_of
  FROM {db}.customer_state FINAL
)
WHERE purchases > 0"""
    ]


def migrations(db: str) -> list[str]:
    """Every statement is idempotent: `migrate` can run any number of times."""
    return [f"CREATE DATABASE IF NOT EXISTS {db}", *(t.ddl(db) for t in TABLES), *views(db)]
