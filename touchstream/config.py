"""Settings from the environment (TOUCHSTREAM_*) or a .env file."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sinks.tables import DEAD_LETTERS_TTL_DAYS, RFM_CUTOFFS_TTL_DAYS
from touchstream import security
from touchstream.domain.lifecycle import DEFAULT_RULES


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOUCHSTREAM_", env_file=".env", extra="ignore")

    broker: str = Field("kafka://127.0.0.1:9092", description="Kafka bootstrap, kafka://host:port")
    clickhouse_url: str = Field(
        "chdb://var/chdb", description="clickhouse://user:pass@host:9000/db or chdb://PATH"
    )
    clickhouse_cluster: str = Field(
        "",
        description="cluster mode: a cluster of the servers' remote_servers config; DDL "
        "runs ON CLUSTER, rows go to replicated local tables through Distributed tables "
        "of the same names (docs/operations.md, ClickHouse cluster); empty: one server",
    )
    app_id: str = Field("touchstream", description="Faust app id = Kafka consumer group")
    input_topic: str = "touchpoints"
    dlq_topic: str = "touchpoints.dlq"
    alerts_topic: str = "touchpoints.alerts"
    transitions_topic: str = "touchpoints.transitions"
    partitions: int = Field(8, ge=1, description="partitions of the input topic and tables")
    replication_factor: int = Field(1, ge=1)
    data_dir: str = Field("var", description="worker data (Faust table stores)")
    # memory:// by default: the local broker (touchstream broker) keeps its topics in
    # memory, and a store on disk must not outlive the changelog it mirrors; the image
    # and compose set rocksdict:// (docs/operations.md, "State").
    store: Literal["memory://", "rocksdict://", "rocksdb://"] = Field(
        "memory://",
        description="the customers table's store: memory:// (rebuilt from the whole "
        "changelog at every start) or rocksdict:// (RocksDB in data_dir: a restart reads "
        "only the changelog written since; production); rocksdb:// is the same as "
        "rocksdict://",
    )
    standbys: int = Field(
        0,
        ge=0,
        description="standby replicas of each table partition, kept up to date by other "
        "workers from the changelog, so a failover reads little of it (rocksdict:// only)",
    )
    batch_max: int = Field(5000, ge=1, description="most messages handled in one batch")
    batch_within_s: float = Field(0.5, gt=0, description="longest wait to fill a batch")
    fetch_max_wait_ms: int = Field(
        100, ge=0, description="longest a fetch waits at the broker for data (Faust: 1500)"
    )
    min_insert_interval_s: float = Field(
        0.0,
        ge=0,
        description="the least time between two ClickHouse inserts of a worker: rows of the "
        "batches processed meanwhile share the next insert (fewer, larger parts; adds up to "
        "this much to the event-to-ClickHouse latency); 0: insert as soon as the previous "
        "insert is done",
    )
    session_timeout_s: float = Field(10.0, gt=0)
    group_instance_id: str = Field(
        "",
        description="static group membership (Kafka 2.3+): a worker restarted with the same "
        "id takes its partitions back at once instead of after the session timeout; one id "
        "per worker that keeps its data dir (a StatefulSet's pod name); empty: dynamic",
    )
    clock: Literal["event", "live"] = Field(
        "event",
        description="event: only event time moves stream time (replays, demos); live: the "
        "wall clock also fires silence deadlines on quiet partitions (production)",
    )
    # The domain's defaults (lifecycle.Rules) are the settings' defaults: one source each.
    lateness_s: float = Field(
        DEFAULT_RULES.allowed_lateness_ms / 1000,
        ge=0,
        description="how late an event may "
        "arrive and still count before its customer's silence deadline fires",
    )
    tick_s: float = Field(5.0, gt=0, description="live mode: how often the wall clock ticks")
    idle_s: float = Field(
        30.0,
        ge=0,
        description="event mode: a partition without messages this long (wall "
        "clock) while others move on is advanced to the latest stream time of the others "
        "(less the lateness), so its deadlines fire; 0 = never",
    )
    quick_resolution_days: float = Field(
        DEFAULT_RULES.quick_resolution_days,
        gt=0,
        description="a complaint resolved within this many days is resolved quickly",
    )
    unresolved_after_days: float = Field(
        DEFAULT_RULES.unresolved_after_days,
        gt=0,
        description="a complaint or call problem still open this long is live "
        "trouble that can raise churn_risk",
    )
    max_future_skew_s: float = Field(
        86_400.0,
        ge=0,
        description="an event dated more than this after the time its batch "
        "was received is dead-lettered (a producer clock off by days, a wrong time zone)",
    )
    producer_max_batch_size: int | None = Field(
        None,
        ge=1,
        description="Faust producer batch bytes (None: Faust's default). The local "
        "Tansu broker reports a wrong log end for multi-record batches, which makes table "
        "recovery stop early; tests and the demo set 1 there (docs/operations.md)",
    )
    cutoff_interval_s: float = Field(
        10.0, gt=0, description="how often RFM score cut-offs are recomputed and published"
    )
    # Fixed RFM thresholds instead of quintiles (all three or none), JSON lists, e.g.
    # TOUCHSTREAM_RFM_FIXED_RECENCY_DAYS='[365,180,90,30]' (docs/scoring.md).
    rfm_fixed_recency_days: list[float] | None = None
    rfm_fixed_frequency: list[float] | None = None
    rfm_fixed_monetary: list[float] | None = None
    # The R/F segment map of customer_scores, 5 rows (R = 1..5) of 5 names (F = 1..5), as
    # JSON; applied by `migrate` (and the worker's start). Default: scoring.DEFAULT_SEGMENTS.
    rfm_segments: list[list[str]] | None = None
    # Days a TTL keeps rows, on servers with TTL (not 18.16); applied by `migrate` (and
    # the worker's start); 0 keeps them forever. Defaults: the tables' (sinks/tables.py).
    dead_letters_ttl_days: int = Field(
        DEAD_LETTERS_TTL_DAYS,
        ge=0,
        description="dead letters older than this (received_at, wall clock) are dropped",
    )
    rfm_cutoffs_ttl_days: int = Field(
        RFM_CUTOFFS_TTL_DAYS,
        ge=0,
        description="RFM cut-off rows written longer ago than this are dropped; "
        "customer_scores reads the latest, which a running worker rewrites",
    )
    web_port: int = Field(6066, description="the worker's web port: GET /customers/{id}")
    web_host: str | None = Field(
        None,
        description="the host name other workers and `touchstream customer` reach this "
        "worker's web server by (its canonical URL); default: the machine's host name",
    )
    health_clickhouse_failing_s: float = Field(
        120.0,
        gt=0,
        description="GET /health answers 503 once the worker's ClickHouse writes have "
        "failed for this long without a success (it keeps retrying meanwhile)",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="the worker's log lines: text, or one JSON object per line"
    )
    worker_url: str | None = Field(
        None,
        description="a worker's web address for `touchstream customer`; default "
        "http://127.0.0.1:<web_port>",
    )
    # Security (docs/operations.md, Security). Any setting may come from a file instead:
    # TOUCHSTREAM_<NAME>_FILE=/run/secrets/... (touchstream.security).
    clickhouse_password: str | None = Field(
        None, description="the ClickHouse password, when it is left out of the URL"
    )
    clickhouse_ca_file: str | None = Field(
        None, description="CA bundle to verify a clickhouses:// server (default: system CAs)"
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = Field(
        None, description="CA bundle to verify the brokers (default: system CAs)"
    )
    kafka_ssl_certfile: str | None = Field(None, description="client certificate (mTLS)")
    kafka_ssl_keyfile: str | None = Field(None, description="the client certificate's key")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            security.SecretFilesSource(settings_cls),
            env_settings,
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _clickhouse_credentials(self) -> Settings:
        self.clickhouse_url = security.clickhouse_url_with(
            self.clickhouse_url, self.clickhouse_password, self.clickhouse_ca_file
        )
        return self

    fit_interval_s: float = Field(
        3600.0,
        ge=0,
        description="how often the worker that owns input partition 0 fits the "
        "churn models (touchstream fit) when the latest fit is older; 0 = never",
    )
    model_poll_s: float = Field(
        30.0, gt=0, description="how often every worker looks for a new chosen model version"
    )

    @property
    def ttl_days(self) -> dict[str, int]:
        """Table name -> the days its TTL keeps rows (Sink.migrate)."""
        return {
            "dead_letters": self.dead_letters_ttl_days,
            "rfm_cutoffs": self.rfm_cutoffs_ttl_days,
        }

    @property
    def bootstrap(self) -> str:
        """host:port list for kafka-python, without the kafka:// scheme."""
        return ",".join(b.removeprefix("kafka://") for b in self.broker.split(","))

    def environment(self, fields: Iterable[str]) -> dict[str, str]:
        """This process's environment with ``fields`` as TOUCHSTREAM_* (those set): what a
        worker or command started from here needs to read the same settings."""
        env = dict(os.environ)
        for name in fields:
            value = getattr(self, name)
            if value is not None:
                env[f"TOUCHSTREAM_{name.upper()}"] = str(value)
        return env
