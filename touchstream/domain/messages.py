"""Every record touchstream produces on Kafka, in one place: the alerts topic's message
(docs/alerts.md, docs/alert.schema.json), the transitions topic's, the dead-letter
envelope (docs/events.md) and the clock message (docs/operations.md). Pure: values in,
JSON out."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

import orjson

from schemas.events import epoch_ms
from touchstream.domain.alerts import ALERT_SCHEMA_VERSION, Alert, iso_ms
from touchstream.domain.lifecycle import Transition

# The key of a clock message: advances stream time, carries no event (``touchstream tick``).
CLOCK_KEY = b"__touchstream_clock__"


def alert_json(a: Alert) -> dict[str, Any]:
    """The alerts topic's message (schema version ALERT_SCHEMA_VERSION)."""
    return {
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": a.alert_id,
        "customer_id": a.customer_id,
        "at": iso_ms(a.at_ms),
        "kind": a.kind,
        "episode": a.episode,
        "stage": a.stage,
        "previous_stage": a.previous_stage,
        "defection_type": a.defection_type,
        "confidence": a.confidence,
        "severity": a.severity,
        "severity_label": a.severity_label,
        "net_spend": format(a.net_spend, "f"),
        "last_purchase_at": (None if a.last_purchase_ms is None else iso_ms(a.last_purchase_ms)),
        "evidence": list(a.evidence),
        "open_issues": list(a.open_issues),
        "message": a.message,
        "churn_probability_90d": a.churn_probability_90d,
        "value_at_risk": a.value_at_risk,
    }


def alert_value(a: Alert) -> bytes:
    return orjson.dumps(alert_json(a))


def transition_json(t: Transition) -> dict[str, Any]:
    """The transitions topic's message."""
    return {
        "customer_id": t.customer_id,
        "seq": t.seq,
        "at": iso_ms(t.at_ms),
        "from": t.from_stage,
        "to": t.to_stage,
        "reason": t.reason,
        "relationship": t.relationship,
        "pattern": t.pattern,
    }


def transition_value(t: Transition) -> bytes:
    return orjson.dumps(transition_json(t))


def dead_letter_envelope(
    reason: str, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None
) -> bytes:
    """The dead-letter topic's value: where it came from, why, and the raw bytes."""
    raw = value or b""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return orjson.dumps(
        {
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key": (key or b"").decode("utf-8", "replace"),
            "raw": text,
            "raw_base64": base64.b64encode(raw).decode(),
        }
    )


def clock_value(until_ms: int) -> bytes:
    """A clock message's value: every partition's stream time may move up to ``until_ms``."""
    return orjson.dumps({"clock": iso_ms(until_ms)})


# A clock message closes a period: key CLOCK_KEY, value {"clock": RFC 3339 time}, sent to
# every partition (``touchstream tick --until``). The partition's watermark moves to that
# time: every deadline due by then fires, as if an event that late had arrived.
def clock_time(value: bytes | None) -> int | str:
    """A clock message's time (epoch ms), or why it is not one."""
    try:
        obj = orjson.loads(value or b"")
        return epoch_ms(datetime.fromisoformat(obj["clock"].replace("Z", "+00:00")))
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        return f'invalid clock message ({e}): send {{"clock": "<RFC 3339 time>"}}'
