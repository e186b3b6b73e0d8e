"""Decoding raw Kafka values into events, or into a readable reason for the dead letters.

Pure: bytes in, an event or a reason out. Accepts the plain contract and CloudEvents 1.0
structured JSON (``specversion`` present), mapped as documented in docs/events.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from schemas.events import (
    EVENT_ADAPTER,
    JSON_KINDS,
    MAX_FUTURE_SKEW_MS,
    Event,
    ahead_of_received,
    epoch_ms,
)

CLOUDEVENTS_TYPE_PREFIX = "com.touchstream."
# The adapter's core validator, called directly: TypeAdapter.validate_python only adds
# keyword defaults, and decoding runs once per message.
_validate = EVENT_ADAPTER.validator.validate_python


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message is not an event. ``reason`` is meant for a person."""

    reason: str


def from_cloudevent(obj: dict[str, Any]) -> dict[str, Any]:
    """Map a CloudEvents 1.0 structured event onto the plain contract.

    id -> event_id, subject -> customer_id, time -> occurred_at, source -> source,
    type ``com.touchstream.purchase`` (or plain ``purchase``) -> type, data -> the fields.
    """
    if obj.get("specversion") != "1.0":
        raise ValueError(f"unsupported CloudEvents specversion {obj.get('specversion')!r}")
    data = obj.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError("CloudEvents data must be a JSON object")
    ce_type = obj.get("type")
    if isinstance(ce_type, str):
        ce_type = ce_type.strip()
    if isinstance(ce_type, str) and ce_type.startswith(CLOUDEVENTS_TYPE_PREFIX):
        ce_type = ce_type[len(CLOUDEVENTS_TYPE_PREFIX) :]
    mapped = dict(data)
    mapped.update(
        event_id=obj.get("id"),
        customer_id=obj.get("subject"),
        type=ce_type,
        occurred_at=obj.get("time"),
        source=obj.get("source"),
    )
    return mapped


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        parts.append(f"{loc}: {e['msg']}" if loc else e["msg"])
    return "; ".join(parts)


def decode_obj(
    obj: Any, received_ms: int | None = None, max_future_skew_ms: int = MAX_FUTURE_SKEW_MS
) -> Event | Rejected:
    """``received_ms``: when the message was received (epoch ms, passed in by the caller);
    an event dated more than ``max_future_skew_ms`` after it is rejected. None: no check."""
    if not isinstance(obj, dict):
        return Rejected(f"expected a JSON object, got {type(obj).__name__}")
    if "specversion" in obj:
        try:
            obj = from_cloudevent(obj)
        except ValueError as e:
            return Rejected(f"invalid CloudEvent: {e}")
    t = obj.get("type")
    if isinstance(t, str) and t != t.strip():
        # The tag is read before any field validator: stripped here, as every string is.
        obj = {**obj, "type": t.strip()}
    try:
        ev: Event = _validate(obj)
    except ValidationError as e:
        return Rejected(f"invalid event: {_describe(e)}")
    if received_ms is not None:
        why = ahead_of_received(epoch_ms(ev.occurred_at), received_ms, max_future_skew_ms)
        if why is not None:
            return Rejected(why)
    return ev


def decode(
    raw: bytes | None, received_ms: int | None = None, max_future_skew_ms: int = MAX_FUTURE_SKEW_MS
) -> Event | Rejected:
    """One Kafka message value -> an event, or the reason it is rejected (``received_ms``
    as in ``decode_obj``)."""
    if raw is None:
        return Rejected("empty message (no value)")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        return Rejected(f"not valid JSON: {e}")
    return decode_obj(obj, received_ms, max_future_skew_ms)


_JSON_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")


def from_text_cells(row: Mapping[str, str]) -> dict[str, Any]:
    """A row of text cells (a CSV line) as the JSON object it stands for: the contract's
    boolean fields' ``true``/``false`` and its number fields' numerals become JSON values,
    as a JSON producer would send them. Any other cell stays text, to be rejected with
    its reason if the field wants a boolean or a number."""
    out: dict[str, Any] = dict(row)
    for name, cell in row.items():
        kind = JSON_KINDS.get(name)
        if kind is None or not isinstance(cell, str):
            continue
        text = cell.strip()
        if kind == "boolean" and text in ("true", "false"):
            out[name] = text == "true"
        elif kind == "number" and _JSON_NUMBER.fullmatch(text):
            n = float(text)
            if n == n and abs(n) != float("inf"):
                out[name] = int(text) if text.lstrip("-").isdigit() else n
    return out
