"""The ClickHouse tables, described once: DDL for ClickHouse 18.16 and for a current server.

Every table is a ReplacingMergeTree keyed by its natural key with a ``version`` column,
so a replay or a retry that writes a row again never double counts: query with FINAL
(or argMax by version) to see one row per key. docs/analysts.md describes each table.

Each column has its 18.16 type (the one rows are made for and every query sees) and hints
that apply where the server has them (``Capabilities``, from its version): LowCardinality
for a column of few distinct values, a compression codec, and per table a TTL. The two
dialects store the same values, so every query gives the same answer on both.
sinks/migrations.py creates and upgrades the tables from this description.

In cluster mode (``Cluster``, the setting TOUCHSTREAM_CLICKHOUSE_CLUSTER) each table is a
replicated table named ``<table>_local`` on every server, with the same ORDER BY,
PARTITION BY and version, and a ``Distributed`` table under the table's own name that
reads all shards and sends each row to the shard of its key's hash (``Table.shard_key``:
one customer's rows on one shard, so FINAL and argMax per customer hold within a shard).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

DT = "DateTime('UTC')"
MONEY = "Decimal(18, 4)"
# MONEY holds 18 digits, 4 after the point: a value must stay under this to be stored
# exactly (clickhouse-driver rounds a larger one to 18 digits; chdb refuses it).
MONEY_LIMIT = Decimal(10) ** 14

# Codecs, spelled as the server reports them in system.columns (a migrate compares them),
# chosen on simulated data against the default LZ4 (docs/benchmarks.md, bench/schema.py).
TIME = "Delta(4), ZSTD(1)"  # DateTime: 13-28% smaller (DoubleDelta was larger than LZ4)
TEXT = "ZSTD(3)"  # ids, JSON and other long text: 38-77% smaller
NUMBER = "ZSTD(1)"  # amounts: 27% smaller
OFFSET = "T64, ZSTD(1)"  # Kafka offsets: 51% smaller

# Days the TTLs keep rows by default (settings TOUCHSTREAM_*_TTL_DAYS override them).
DEAD_LETTERS_TTL_DAYS = 30
RFM_CUTOFFS_TTL_DAYS = 7


@dataclass(frozen=True)
class Capabilities:
    """What a server has beyond ClickHouse 18.16. ``of(version)`` decides; everything
    but CREATE OR REPLACE VIEW is taken from 21.8 (an LTS release) on, so a server
    between 18.16 and 21.8 gets the 18.16 dialect, which every later release accepts."""

    replace_view: bool = False  # CREATE OR REPLACE VIEW (19.5)
    low_cardinality: bool = False  # 18.16: only with an experimental setting
    codecs: bool = False  # CODEC(...) on columns, compression_codec in system.columns
    ttl: bool = False  # table TTL, ALTER TABLE MODIFY TTL / REMOVE TTL
    add_column_if_not_exists: bool = False

    CURRENT_FROM = (21, 8)

    @classmethod
    def of(cls, version: Sequence[int]) -> Capabilities:
        v = tuple(version)
        current = v >= cls.CURRENT_FROM
        return cls(v >= (19, 5), current, current, current, current)

    @property
    def dialect(self) -> str:
        return "current" if self.low_cardinality else "18.16"


PLAIN = Capabilities()  # ClickHouse 18.16
CURRENT = Capabilities(True, True, True, True, True)


@dataclass(frozen=True)
class Cluster:
    """A ClickHouse cluster of the servers' remote_servers config, by name. Each server
    needs the macros ``{shard}`` and ``{replica}`` and ZooKeeper (docs/operations.md,
    "ClickHouse cluster")."""

    name: str

    LOCAL_SUFFIX = "_local"

    @property
    def on(self) -> str:
        return f" ON CLUSTER {self.name}"

    def local(self, table: str) -> str:
        return table + self.LOCAL_SUFFIX


def on_cluster(cluster: Cluster | None) -> str:
    """`` ON CLUSTER name`` for a DDL statement in cluster mode, else nothing."""
    return cluster.on if cluster else ""


def stored_name(table: str, cluster: Cluster | None) -> str:
    """The table that holds the rows: the local replicated one in cluster mode."""
    return cluster.local(table) if cluster else table


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # the 18.16 type: what rows carry and queries see, in either dialect
    low_cardinality: bool = False  # LowCardinality(type) where the server has it
    codec: str = ""  # CODEC(codec) where the server has codecs
    fill: str = ""  # "MATERIALIZED expr" or "DEFAULT expr": the server fills it, no insert does
    since: int = 1  # the migration step (sinks/migrations.py) that added it

    def type_in(self, caps: Capabilities) -> str:
        return (
            f"LowCardinality({self.type})"
            if self.low_cardinality and caps.low_cardinality
            else self.type
        )

    def codec_in(self, caps: Capabilities) -> str:
        return f"CODEC({self.codec})" if self.codec and caps.codecs else ""

    def ddl(self, caps: Capabilities) -> str:
        parts = [f"`{self.name}`", self.type_in(caps), self.fill, self.codec_in(caps)]
        return " ".join(p for p in parts if p)


def _lc(name: str, type_: str = "String", **kw: object) -> Column:
    return Column(name, type_, low_cardinality=True, **kw)  # type: ignore[arg-type]


def _attribute(name: str, since: int, low_cardinality: bool = True) -> Column:
    """A field of events.attributes as a column of its own, computed by the server (the
    same expression on 18.16 and current servers, so both give the same values)."""
    return Column(
        name,
        "String",
        low_cardinality=low_cardinality,
        fill=f"MATERIALIZED visitParamExtractString(attributes, '{name}')",
        since=since,
    )


@dataclass(frozen=True)
class Table:
    name: str
    spec: tuple[Column | tuple[str, str], ...]  # (name, type) pairs are plain columns
    engine: str
    comment: str = ""
    # (DateTime column, default days): rows older than that are dropped where the server
    # has TTL; the days are a setting (touchstream.config), 0 keeps rows forever.
    ttl: tuple[str, int] | None = None
    since: int = 1  # the migration step that created it
    all_columns: tuple[Column, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cols = tuple(c if isinstance(c, Column) else Column(*c) for c in self.spec)
        object.__setattr__(self, "all_columns", cols)

    @property
    def columns(self) -> tuple[tuple[str, str], ...]:
        """(name, type) of the columns rows carry, in order (not the ones the server fills)."""
        return tuple((c.name, c.type) for c in self.all_columns if not c.fill)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)

    @property
    def partition_column(self) -> str | None:
        """The DateTime column of ``PARTITION BY toYYYYMM(column)``, if any."""
        if "PARTITION BY toYYYYMM(" not in self.engine:
            return None
        return self.engine.split("PARTITION BY toYYYYMM(", 1)[1].split(")", 1)[0]

    @property
    def key(self) -> tuple[str, ...]:
        """The natural key: the ORDER BY columns of the engine."""
        order_by = self.engine.split("ORDER BY", 1)[1].strip().strip("()")
        return tuple(c.strip() for c in order_by.split(","))

    def ttl_expression(self, caps: Capabilities, days: Mapping[str, int] | None = None) -> str:
        """The TTL clause's expression on this server with these days ('' for none), as
        the server reports it in system.tables.engine_full."""
        if self.ttl is None or not caps.ttl:
            return ""
        column, default = self.ttl
        n = (days or {}).get(self.name, default)
        return f"{column} + toIntervalDay({n})" if n > 0 else ""

    def engine_in(self, db: str, cluster: Cluster | None) -> str:
        """The engine; in cluster mode its replicated form, one ZooKeeper path per shard."""
        if cluster is None:
            return self.engine
        name, rest = self.engine.split("(", 1)
        path = f"'/clickhouse/tables/{{shard}}/{db}/{cluster.local(self.name)}', '{{replica}}'"
        return f"Replicated{name}({path}, {rest}"

    @property
    def shard_key(self) -> str:
        """The Distributed table's sharding key: a customer's rows on one shard; tables
        without a customer by their whole key, so every version of a row meets itself."""
        key = ("customer_id",) if "customer_id" in self.key else self.key
        return f"cityHash64({', '.join(key)})"

    def ddl(
        self,
        db: str,
        caps: Capabilities = PLAIN,
        ttl_days: Mapping[str, int] | None = None,
        cluster: Cluster | None = None,
    ) -> str:
        cols = ",\n  ".join(c.ddl(caps) for c in self.all_columns)
        ttl = self.ttl_expression(caps, ttl_days)
        name = stored_name(self.name, cluster)
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{name}{on_cluster(cluster)} (\n  {cols}\n) "
            f"ENGINE = {self.engine_in(db, cluster)}" + (f" TTL {ttl}" if ttl else "")
        )

    def distributed_columns(self, caps: Capabilities) -> tuple[tuple[str, str], ...]:
        """(name, type) of the Distributed table's columns, as system.columns gives them."""
        return tuple((c.name, c.type_in(caps)) for c in self.all_columns)

    def distributed_ddl(
        self, db: str, caps: Capabilities, cluster: Cluster, name: str | None = None
    ) -> str:
        """The Distributed table in front of the local ones. A MATERIALIZED column is an
        ALIAS of the same expression here: 18.16 sends a Distributed table's materialized
        values on to the shards, which refuse them; an alias is computed where it is read.
        No codecs: it stores nothing."""
        cols = []
        for c in self.all_columns:
            fill = c.fill.replace("MATERIALIZED", "ALIAS", 1)
            cols.append(" ".join(p for p in (f"`{c.name}`", c.type_in(caps), fill) if p))
        body = ",\n  ".join(cols)
        return (
            f"CREATE TABLE IF NOT EXISTS {db}.{name or self.name}{cluster.on} (\n  {body}\n) "
            f"ENGINE = Distributed({cluster.name}, {db}, {cluster.local(self.name)}, "
            f"{self.shard_key})"
        )


EVENTS = Table(
    "events",
    (
        Column("event_id", "String", codec=TEXT),
        Column("customer_id", "String", codec=TEXT),
        _lc("type"),
        Column("occurred_at", DT, codec=TIME),
        _lc("source"),
        Column("amount", MONEY, codec=NUMBER),  # purchases and refunds; 0 for other types
        _lc("currency"),
        Column("attributes", "String", codec=TEXT),  # the type's other fields, as JSON
        ("kafka_partition", "UInt16"),
        Column("kafka_offset", "UInt64", codec=OFFSET),
        ("version", "UInt64"),
        # The attributes the views and analysts filter on, as columns ('' where absent).
        _attribute("satisfaction", since=2),  # survey
        _attribute("complaint_id", since=2, low_cardinality=False),  # complaint
        _attribute("category", since=2),  # purchase, complaint
        _attribute("reason", since=2),  # call, refund
    ),
    "ReplacingMergeTree(version) PARTITION BY toYYYYMM(occurred_at) "
    "ORDER BY (customer_id, event_id)",
    "validated events, one row per (customer_id, event_id)",
)

CHURN_COLUMNS = (
    ("p_alive", "Nullable(Float64)"),
    ("churn_probability_90d", "Nullable(Float64)"),
    ("expected_purchases_90d", "Nullable(Float64)"),
    ("predicted_clv_365d", "Nullable(Float64)"),
)

CUSTOMER_STATE = Table(
    "customer_state",
    (
        ("customer_id", "String"),
        ("version", "UInt64"),
        Column("first_event_at", DT, codec=TIME),
        Column("last_event_at", DT, codec=TIME),
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
        _lc("stage"),  # '' before the first purchase
        ("stage_since", DT),
        _lc("declined_from"),
        ("relationships", "UInt32"),
        _lc("exit_pattern"),
        _lc("defection_type"),
        ("defection_confidence", "Float64"),
        ("alert_level", "UInt8"),
        ("next_deadline", f"Nullable({DT})"),
        # none | unresolved | resolved | resolved_quickly: the latest complaint's outcome
        _lc("complaint_outcome"),
        # The churn model's values as the stream scored them at scored_at (NULL without a
        # model); customer_churn has them as of stream time (docs/churn-probability.md).
        *CHURN_COLUMNS,
        ("model_version", "UInt64"),  # model_params.version that scored them (0: none)
        ("scored_at", f"Nullable({DT})"),
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
        Column("raw", "String", codec=TEXT),
        Column("reason", "String", codec=TEXT),  # the error, with values: not few distinct
        Column("received_at", DT, codec=TIME),  # the worker's wall clock
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY (topic, partition, offset)",
    "messages that are not valid events, with the reason",
    ttl=("received_at", DEAD_LETTERS_TTL_DAYS),
)

STREAM_CLOCK = Table(
    "stream_clock",
    (
        ("partition", "UInt16"),
        Column("stream_time", DT, codec=TIME),
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
        Column("at", DT, codec=TIME),
        _lc("from_stage"),
        _lc("to_stage"),
        Column("reason", "String", codec=TEXT),  # a sentence with numbers in it
        ("relationship", "UInt32"),
        _lc("pattern"),
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
        Column("at", DT, codec=TIME),
        _lc("kind"),
        ("episode", "UInt32"),
        _lc("stage"),
        _lc("previous_stage"),
        _lc("defection_type"),
        ("confidence", "Float64"),
        ("severity", "UInt8"),
        _lc("severity_label"),
        ("net_spend", MONEY),
        Column("evidence", "String", codec=TEXT),  # JSON array of strings
        Column("message", "String", codec=TEXT),
        ("schema_version", "UInt16"),
        ("version", "UInt64"),
        Column("open_issues", "String", codec=TEXT),  # JSON array: churn_risk's live trouble
        ("churn_probability_90d", "Nullable(Float64)"),  # with a churn model loaded
        ("value_at_risk", "Nullable(Float64)"),  # predicted_clv_365d, likewise
    ),
    "ReplacingMergeTree(version) ORDER BY (customer_id, alert_id)",
    "churn alerts, as sent to the alerts topic",
)

RFM_CUTOFFS = Table(
    "rfm_cutoffs",
    (
        ("as_of", DT),  # stream time when they were computed
        _lc("kind"),  # quantile | fixed
        ("population", "UInt64"),
        *((f"r{i}", "Float64") for i in range(1, 5)),  # last purchase day numbers
        *((f"f{i}", "Float64") for i in range(1, 5)),  # purchase days
        *((f"m{i}", "Float64") for i in range(1, 5)),  # net spend
        ("rate_median", "Float64"),  # purchase days per year
        ("amount_median", "Float64"),  # net spend per purchase day
        ("version", "UInt64"),
        # The server's wall clock at the insert: the TTL counts from it, not from as_of
        # (stream time, years back in a replay). A running worker writes every
        # cutoff_interval_s, so the latest row is always recent while one runs.
        Column("written_at", DT, codec=TIME, fill="DEFAULT now()", since=3),
    ),
    "ReplacingMergeTree(version) ORDER BY as_of",
    "RFM score cut-offs from the stream's merged quantile sketches, over stream time",
    ttl=("written_at", RFM_CUTOFFS_TTL_DAYS),
)

RFM_SKETCHES = Table(
    "rfm_sketches",
    (
        ("partition", "UInt16"),
        Column("sketch", "String", codec=TEXT),  # JSON: scoring.RfmSketches.to_record()
        ("customers", "UInt64"),
        Column("published_at", DT, codec=TIME),
        ("version", "UInt64"),
    ),
    "ReplacingMergeTree(version) ORDER BY partition",
    "each input partition's RFM population sketch, as last published by its worker",
)

MODEL_PARAMS = Table(
    "model_params",
    (
        ("version", "UInt64"),  # the fit: its wall-clock time in epoch ms
        ("model", "String"),  # bgnbd | mbgnbd | pareto_nbd
        ("chosen", "UInt8"),  # the one the stream and customer_churn use
        ("params", "String"),  # JSON, days: {"r", "alpha", "a", "b"} or {"r", "alpha", "s", "beta"}
        ("p1", "Float64"),
        ("p2", "Float64"),
        ("p3", "Float64"),
        ("p4", "Float64"),
        ("spend_p", "Float64"),
        ("spend_q", "Float64"),
        ("spend_v", "Float64"),  # Gamma-Gamma
        ("calibrated", "UInt8"),  # the chosen row: churn calibration weights w0..w5 apply
        *((f"w{i}", "Float64") for i in range(6)),
        ("fitted_at", DT),
        ("as_of", DT),  # stream time of the summary it was fitted on
        ("log_likelihood", "Float64"),  # on the whole summary, summed
        ("n_customers", "UInt64"),
        ("holdout_days", "UInt32"),  # the calibration split the choice was made on
        ("holdout_customers", "UInt64"),
        ("holdout_log_loss", "Float64"),  # of P(no purchase in holdout_days), per customer
        ("holdout_predicted", "Float64"),  # repeat purchase days predicted in the holdout
        ("holdout_actual", "Float64"),  # ... and made
        ("choice", "String"),  # why this row is (not) chosen, for a person
    ),
    "ReplacingMergeTree(version) ORDER BY (version, model)",
    "buy-till-you-die model fits, one row per model per fit; chosen = 1 marks the one used",
)

TABLES: tuple[Table, ...] = (
    EVENTS,
    CUSTOMER_STATE,
    TRANSITIONS,
    ALERTS,
    DEAD_LETTERS,
    STREAM_CLOCK,
    RFM_CUTOFFS,
    RFM_SKETCHES,
    MODEL_PARAMS,
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
WHERE purchases > 0""",
        churn_view(db),
    ]


MODEL_COLUMNS = (
    "version AS model_version",
    "model",
    "p1",
    "p2",
    "p3",
    "p4",
    "spend_p",
    "spend_q",
    "spend_v",
    "calibrated",
    *(f"w{i}" for i in range(6)),
)


def chosen_model_sql(db: str) -> str:
    """The columns and FROM of the model the stream and customer_churn use: the latest
    version's chosen row (the worker loads it with this very query)."""
    return (
        f"{', '.join(MODEL_COLUMNS)} FROM {db}.model_params FINAL WHERE chosen = 1 "
        "ORDER BY version DESC LIMIT 1"
    )


def churn_view(db: str) -> str:
    """The churn model's four values per buyer as of stream time, computed at query time
    from the summary and the latest chosen model_params row (sinks/btyd_sql.py): NULL
    (model_version 0) before the first fit."""
    from sinks.btyd_sql import churn_select

    weights = ", ".join(f"w{i}" for i in range(6))
    base = f"""SELECT customer_id, stage, net_spend, first_purchase_at, last_purchase_at,
    frequency, recency, monetary_value, as_of,
    toFloat64(frequency) AS x, toFloat64(recency) AS tx,
    toFloat64(assumeNotNull(toRelativeDayNum(as_of)
      - toRelativeDayNum(assumeNotNull(first_purchase_at)))) AS T,
    monetary_value AS m,
    model_version, model, p1, p2, p3, p4, spend_p, spend_q, spend_v, calibrated, {weights}
  FROM (
    SELECT customer_id, stage, net_spend, first_purchase_at, last_purchase_at, frequency,
      recency, monetary_value,
      (SELECT max(stream_time) FROM {db}.stream_clock FINAL) AS as_of, 1 AS k_
    FROM {db}.customer_state FINAL
    WHERE purchases > 0
  ) AS s ANY LEFT JOIN (
    SELECT 1 AS k_, {chosen_model_sql(db)}
  ) AS mp USING k_"""
    keep = (
        "customer_id, stage, net_spend, first_purchase_at, last_purchase_at, frequency, "
        "recency, toInt32(T) AS T, monetary_value, toInt32(T - tx) AS recency_days, as_of"
    )
    return f"CREATE VIEW IF NOT EXISTS {db}.customer_churn AS\n{churn_select(base, keep)}"


def _segment_sql(score_pair: str, segment_map: Sequence[Sequence[str]] | None) -> str:
    from touchstream.domain.scoring import DEFAULT_SEGMENTS, segment

    keys = [r * 10 + f for r in range(1, 6) for f in range(1, 6)]
    names = [segment(k // 10, k % 10, segment_map or DEFAULT_SEGMENTS) for k in keys]
    return (
        f"transform({score_pair}, [{', '.join(map(str, keys))}], "
        f"[{', '.join(repr(n) for n in names)}], '')"
    )


class _Constants:
    """The SQL literals of customer_scores, from the constants the domain uses."""

    def __init__(self) -> None:
        from touchstream.domain import lifecycle
        from touchstream.domain import scoring as sc

        # QUADRANTS in its order: both high, frequent only, high spend only, neither
        self.best, self.frequent_low_spend, self.rare_high_spend, self.uncertain = (
            f"'{q}'" for q in sc.QUADRANTS
        )
        self.key_m = sc.KEY_ACCOUNT_MIN_M_SCORE
        self.key_tenure = sc.KEY_ACCOUNT_MIN_TENURE_DAYS
        self.key_days = sc.KEY_ACCOUNT_MIN_PURCHASE_DAYS
        self.one_off_days = sc.TRANSACTION_BUYER_MIN_DAYS
        self.rate_window = sc.RATE_MIN_WINDOW_DAYS
        self.declining = f"'{lifecycle.DECLINE}', '{lifecycle.CHURNED}'"


def _score_sql(value: str, prefix: str) -> str:
    # 1 + the number of thresholds at or below the value (docs/scoring.md)
    return "1 + " + " + ".join(f"({value} >= {prefix}{i})" for i in range(1, 5))


def scores_view(db: str, segment_map: Sequence[Sequence[str]] | None = None) -> str:
    """Scores, segment, behaviour quadrant and flags of every buyer, from the latest
    cut-offs: computed at query time, so R ages with stream time without new events.
    Names and thresholds come from touchstream.domain (``_Constants``)."""
    k = _Constants()
    return f"""CREATE VIEW IF NOT EXISTS {db}.customer_scores AS
SELECT
  customer_id, stage, purchase_days, net_spend, last_purchase_day,
  r_score, f_score, m_score,
  {_segment_sql("r_score * 10 + f_score", segment_map)} AS segment,
  multiIf(rate >= rate_median AND amount >= amount_median, {k.best},
          rate >= rate_median, {k.frequent_low_spend},
          amount >= amount_median, {k.rare_high_spend}, {k.uncertain}) AS quadrant,
  m_score >= {k.key_m} AND stream_day - first_purchase_day >= {k.key_tenure}
    AND purchase_days >= {k.key_days} AND stage NOT IN ({k.declining}) AS key_account,
  purchase_days = 1 AND stream_day - first_purchase_day >= {k.one_off_days}
    AS transaction_buyer,
  cutoffs_as_of, population,
  p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version
FROM (
  SELECT *,
    {_score_sql("last_purchase_day", "r")} AS r_score,
    {_score_sql("purchase_days", "f")} AS f_score,
    {_score_sql("toFloat64(net_spend)", "m")} AS m_score,
    purchase_days * 365 / greatest(last_purchase_day - first_purchase_day + 1, {k.rate_window})
      AS rate,
    toFloat64(net_spend) / purchase_days AS amount
  FROM (
    SELECT customer_id, stage, net_spend, frequency + 1 AS purchase_days,
      toUInt32(toDate(assumeNotNull(first_purchase_at))) AS first_purchase_day,
      toUInt32(toDate(assumeNotNull(last_purchase_at))) AS last_purchase_day,
      -- A current engine types a scalar subquery Nullable, which made the flags
      -- Nullable and NULL where customer_profile finds no scores (18.16: 0).
      assumeNotNull((SELECT toUInt32(toDate(max(stream_time))) FROM {db}.stream_clock FINAL))
        AS stream_day,
      p_alive, churn_probability_90d, expected_purchases_90d, predicted_clv_365d, model_version
    FROM {db}.customer_churn
  ) AS s
  CROSS JOIN (
    SELECT as_of AS cutoffs_as_of, population, r1, r2, r3, r4, f1, f2, f3, f4,
      m1, m2, m3, m4, rate_median, amount_median
    FROM {db}.rfm_cutoffs FINAL ORDER BY as_of DESC LIMIT 1
  ) AS c
)"""


VIEWS = ("customer_rfm", "customer_churn", "customer_scores")
_VIEW_HEAD = re.compile(r"CREATE VIEW IF NOT EXISTS \S+\.(\w+) AS\n")


# A join of the views' SQL (not ARRAY JOIN, which unfolds an array of the same row).
_JOIN = re.compile(r"(?<!ARRAY )\b((?:ANY |ALL )?(?:LEFT |INNER |CROSS |RIGHT |FULL )?JOIN)\b")


def global_joins(select: str) -> str:
    """Every join as a GLOBAL JOIN: its right side is read once, from every shard through
    the Distributed tables, and sent to the shards with the query. Without it a query
    that reads a Distributed table and joins another is refused (18.16, and current
    servers by default: distributed_product_mode = 'deny'), and a local join would see
    only the shard's own rows of tables not sharded by customer."""
    return _JOIN.sub(r"GLOBAL \1", select)


def view_definitions(
    db: str, segment_map: Sequence[Sequence[str]] | None = None, cluster: Cluster | None = None
) -> dict[str, str]:
    """Every view, name -> its SELECT, in the order they are created (a view may read
    the ones before it): customer_rfm, customer_scores, then sinks/views.py's. In
    cluster mode with GLOBAL joins (``global_joins``)."""
    from sinks.views import analyst_views

    defs = {}
    for sql in (*views(db), scores_view(db, segment_map)):
        head = _VIEW_HEAD.match(sql)
        assert head, sql[:80]
        defs[head.group(1)] = sql[head.end() :]
    defs |= analyst_views(db, segment_map)
    if cluster is not None:
        defs = {name: global_joins(select) for name, select in defs.items()}
    return defs
