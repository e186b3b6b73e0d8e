"""`touchstream alerts`: churn alerts as they arrive, one coloured line each, for a person.

Reads the alerts topic (docs/alerts.md) with kafka-python, without a consumer group: it
commits nothing and never takes partitions from another consumer. Each alert is shown
once per run (alerts are de-duplicated by ``alert_id``, which is stable across replays).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer
from kafka.errors import KafkaError
from rich.console import Console
from rich.text import Text

from touchstream.config import Settings
from touchstream.domain.alerts import KINDS, SEVERITY_LABELS
from touchstream.kafka import BrokerUnavailable
from touchstream.security import kafka_options

SEVERITY_STYLES = {1: "cyan", 2: "yellow", 3: "bold dark_orange", 4: "bold red"}
KIND_STYLES = {
    "churn_risk": "yellow",
    "decline": "dark_orange",
    "churned": "bold red",
    "recovered": "bold green",
}
IDLE_TIMEOUT_MS = 5_000  # without --follow: stop after this long with no new alert
BOOTSTRAP_TIMEOUT_MS = 5_000  # an unreachable broker is reported after this long


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts to show: of these kinds (empty: all), at least this severity."""

    kinds: frozenset[str] = frozenset()
    min_severity: int = 1

    @classmethod
    def of(cls, kinds: Iterable[str], min_severity: str | int = 1) -> AlertFilter:
        """From the command line; ValueError names what is wrong and what is allowed."""
        chosen = frozenset(k.strip() for ks in kinds for k in ks.split(",") if k.strip())
        unknown = sorted(chosen - set(KINDS))
        if unknown:
            raise ValueError(f"unknown alert kind {', '.join(unknown)}: use {', '.join(KINDS)}")
        m = str(min_severity).strip().lower()
        if m in SEVERITY_LABELS:
            level = SEVERITY_LABELS.index(m) + 1
        elif m.isdigit() and 1 <= int(m) <= len(SEVERITY_LABELS):
            level = int(m)
        else:
            raise ValueError(
                f"--min-severity {min_severity!r}: use 1-{len(SEVERITY_LABELS)} "
                f"or {', '.join(SEVERITY_LABELS)}"
            )
        return cls(chosen, level)

    def wants(self, msg: Mapping[str, Any]) -> bool:
        if self.kinds and msg.get("kind") not in self.kinds:
            return False
        severity = msg.get("severity")
        return not (isinstance(severity, int) and severity < self.min_severity)


def alert_line(msg: Mapping[str, Any]) -> Text:
    """One alert as a line: at, severity, kind, customer, defection type, message."""
    severity = msg.get("severity")
    sev_style = SEVERITY_STYLES.get(severity, "") if isinstance(severity, int) else ""
    kind = str(msg.get("kind", "?"))
    at = str(msg.get("at", "")).replace("T", " ")
    dtype = str(msg.get("defection_type", "unknown"))
    why = f"{dtype} ({float(msg.get('confidence') or 0):.2f})" if dtype != "unknown" else "unknown"
    return Text.assemble(
        (f"{at:<20} ", "dim"),
        (f"{str(msg.get('severity_label', '?')).upper():<8} ", sev_style),
        (f"{kind:<10} ", KIND_STYLES.get(kind, "")),
        (f"{msg.get('customer_id', '?')}  ", "bold"),
        (f"{why:<20} ", "magenta" if dtype != "unknown" else "dim"),
        (str(msg.get("message", "")), sev_style if kind != "recovered" else "green"),
    )


def tail(
    settings: Settings,
    from_beginning: bool,
    follow: bool,
    console: Console,
    idle_timeout_ms: int = IDLE_TIMEOUT_MS,
    wanted: AlertFilter = AlertFilter(),
    as_json: bool = False,
    status: Console | None = None,
) -> int:
    """Print the alerts of ``settings.alerts_topic``: all of them (``from_beginning``) or
    only new ones; until Ctrl-C (``follow``) or until ``idle_timeout_ms`` pass without
    one; only those ``wanted`` lets through; as lines for a person, or ``as_json`` one
    JSON object per line (the message as on the topic). Status lines go to ``status``
    (default: ``console``). Returns how many distinct alerts were printed. Raises
    BrokerUnavailable."""
    status = status or console
    topic = settings.alerts_topic
    config: dict[str, Any] = dict(
        bootstrap_servers=settings.bootstrap,
        group_id=None,  # nothing committed, nobody's partitions taken
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        consumer_timeout_ms=float("inf") if follow else idle_timeout_ms,
        **kafka_options(settings),
    )
    if "bootstrap_timeout_ms" in KafkaConsumer.DEFAULT_CONFIG:  # newer kafka-python
        config["bootstrap_timeout_ms"] = BOOTSTRAP_TIMEOUT_MS  # fail fast, not after 30 s
    try:
        consumer = KafkaConsumer(**config)
    except (KafkaError, OSError) as e:
        why = str(e) if str(e).startswith(type(e).__name__) else f"{type(e).__name__}: {e}"
        raise BrokerUnavailable(
            f"cannot reach a Kafka broker at {settings.bootstrap}: {why}. "
            "Is it running, and is TOUCHSTREAM_BROKER right?"
        ) from e
    seen: set[str] = set()
    shown = duplicates = 0
    try:
        if topic not in consumer.topics():
            status.print(f"[dim]topic {topic} does not exist yet (no worker has run?)[/]")
            if not follow:
                return 0
        consumer.subscribe([topic])
        where = "from the beginning" if from_beginning else "new alerts only"
        until = "Ctrl-C to stop" if follow else "stops when idle"
        status.print(f"[dim]{topic} at {settings.bootstrap}: {where}, {until}[/]")
        for record in consumer:
            try:
                msg = orjson.loads(record.value)
                if not isinstance(msg, dict):
                    raise ValueError("not a JSON object")
            except (orjson.JSONDecodeError, ValueError, TypeError) as e:
                status.print(
                    f"[red]unreadable message at partition {record.partition} "
                    f"offset {record.offset}: {e}[/]"
                )
                continue
            alert_id = str(msg.get("alert_id", f"{record.partition}:{record.offset}"))
            if alert_id in seen:
                duplicates += 1  # a redelivery or a replay: the same alert again
                continue
            seen.add(alert_id)
            if not wanted.wants(msg):
                continue
            if as_json:
                console.file.write(orjson.dumps(msg).decode() + "\n")
                console.file.flush()
            else:
                console.print(alert_line(msg), highlight=False)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    again = f" ({duplicates} repeated deliveries not shown)" if duplicates else ""
    status.print(f"[dim]{shown} alert{'' if shown == 1 else 's'}{again}[/]")
    return shown
