"""Rows for the tables of sinks/tables.py, from domain outputs (pure: the processor half
of a processor/writer split; the sinks are the writers).

DateTime values are epoch milliseconds (ints), as the domain keeps them: the sinks take
them as they are (sinks/base.py), so no datetime object is made per value. The topics'
JSON has its own ISO text (``iso_ms``)."""

from __future__ import annotations

import hashlib
from contextlib import suppress
from datetime import datetime
from decimal import Decimal
from math import isfinite
from types import NoneType
from typing import Annotated, Any, Literal, get_args, get_origin

import orjson

from schemas.events import EVENT_TYPES, Event, Purchase, Refund, _Event, epoch_ms
from sinks.base import Row
from sinks.tables import BY_NAME
from touchstream.domain.alerts import ALERT_SCHEMA_VERSION, Alert, iso_ms
from touchstream.domain.btyd import Model
from touchstream.domain.customer import CustomerState, Working, churn_scores
from touchstream.domain.issues import outcome as complaint_outcome
from touchstream.domain.lifecycle import DEFAULT_RULES, Transition
from touchstream.domain.scoring import Cutoffs, RfmSketches

_COMMON = {"event_id", "customer_id", "type", "occurred_at", "source", "amount", "currency"}
_JSON_NATIVE = (str, bool, int)  # fields whose values model_dump(mode="json") keeps as is


def _attribute_fields(cls: type[_Event]) -> tuple[tuple[str, bool], ...] | None:
    """``(name, is_float)`` of the fields that go into ``attributes``, in model order, or
    None when a field needs pydantic's JSON serializer (the generic path)."""
    fields = []
    for name, f in cls.model_fields.items():
        if name in _COMMON:
            continue
        kinds = {
            get_args(a)[0] if get_origin(a) is Annotated else a  # its validators aside
            for a in (get_args(f.annotation) or (f.annotation,))
            if a is not NoneType
        }
        if get_origin(f.annotation) is Literal and all(type(v) is str for v in kinds):
            kinds = {str}
        if kinds == {float}:
            fields.append((name, True))  # serialized as a float, even an int default
        elif len(kinds) == 1 and kinds <= set(_JSON_NATIVE):
            fields.append((name, False))
        else:
            return None
    return tuple(fields)


# Per event type: the amount and currency columns, and the attributes' fields.
_ROW_SHAPE = {
    cls: (
        "amount" in cls.model_fields,
        "currency" in cls.model_fields,
        _attribute_fields(cls),
    )
    for cls in EVENT_TYPES
}
_ZERO = Decimal(0)


def _attributes(ev: Event, fields: tuple[tuple[str, bool], ...] | None) -> dict[str, Any]:
    """The type's other fields as ``model_dump(mode="json", exclude_none=True)`` gives
    them, read straight from the model (the serializer took 3 µs per event)."""
    if fields is not None:
        values = ev.__dict__
        out = {}
        for name, is_float in fields:
            v = values[name]
            if v is None:
                continue
            if is_float:
                v = float(v)
                if not isfinite(v):
                    break  # pydantic's JSON mode has its own rule for inf/nan
            out[name] = v
        else:
            return out
    return {
        k: v for k, v in ev.model_dump(mode="json", exclude_none=True).items() if k not in _COMMON
    }


def event_row(
    ev: Event, version: int, partition: int, offset: int, occurred_ms: int | None = None
) -> Row:
    """``occurred_ms``: ``epoch_ms(ev.occurred_at)`` when the caller has it already."""
    has_amount, has_currency, fields = _ROW_SHAPE.get(type(ev)) or (
        isinstance(ev, Purchase | Refund),
        isinstance(ev, Purchase),
        None,
    )
    return (
        ev.event_id,
        ev.customer_id,
        ev.type,
        epoch_ms(ev.occurred_at) if occurred_ms is None else occurred_ms,
        ev.source or "",
        ev.amount if has_amount else _ZERO,  # type: ignore[union-attr]
        ev.currency if has_currency else "",  # type: ignore[union-attr]
        orjson.dumps(_attributes(ev, fields)).decode(),
        partition,
        offset,
        version,
    )


_UNSCORED = (None, None, None, None, 0, None)


def model_columns(model: Model | None, s: CustomerState | Working) -> tuple[Any, ...]:
    """customer_state's churn model columns: (p_alive, churn_probability_90d,
    expected_purchases_90d, predicted_clv_365d, model_version, scored_at ms), scored as of
    the customer's latest event or stage change (so a replay scores the same)."""
    if model is None:
        return _UNSCORED
    as_of = max(s.last_event_ms, s.stage_since_ms)
    scores = churn_scores(model, s, as_of)
    if scores is None:
        return (None, None, None, None, model.version, None)
    return (*scores, model.version, as_of)


def state_row(
    s: CustomerState | Working,
    quick_days: float = DEFAULT_RULES.quick_resolution_days,
    model: Model | None = None,
) -> Row:
    """``model``: the churn model whose values fill the model columns (none: empty)."""
    days = s.purchase_days
    frequency = len(days) - 1 if days else 0  # the summary properties, inlined
    return (
        s.customer_id,
        s.version,
        s.first_event_ms,
        s.last_event_ms,
        s.purchases,
        s.purchase_total,
        s.refunds,
        s.refund_total,
        s.purchase_total - s.refund_total,
        s.first_purchase_ms,
        s.last_purchase_ms,
        frequency,
        days[-1] - days[0] if days else 0,
        float((s.purchase_total - s.first_day_spend) / frequency) if frequency else 0.0,
        s.stage or "",
        s.stage_since_ms,
        s.declined_from or "",
        s.relationships,
        s.exit_pattern or "",
        s.defection_type or "",
        s.defection_confidence,
        s.alert_level,
        s.next_deadline_ms,
        complaint_outcome(s.complaints, quick_days) if s.complaints else "none",
        *model_columns(model, s),
    )


def transition_row(t: Transition) -> Row:
    return (
        t.customer_id,
        t.seq,
        t.at_ms,
        t.from_stage or "",
        t.to_stage,
        t.reason,
        t.relationship,
        t.pattern or "",
        t.seq,
    )


def alert_row(a: Alert) -> Row:
    return (
        a.alert_id,
        a.customer_id,
        a.at_ms,
        a.kind,
        a.episode,
        a.stage,
        a.previous_stage or "",
        a.defection_type,
        a.confidence,
        a.severity,
        a.severity_label,
        a.net_spend,
        orjson.dumps(list(a.evidence)).decode(),
        a.message,
        ALERT_SCHEMA_VERSION,
        a.version,
        orjson.dumps(list(a.open_issues)).decode(),
        a.churn_probability_90d,
        a.value_at_risk,
    )


def dead_letter_row(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    raw: bytes | None,
    reason: str,
    received_at: datetime | int,
) -> Row:
    """``received_at``: an aware datetime or epoch milliseconds."""
    return (
        topic,
        partition,
        offset,
        (key or b"").decode("utf-8", "replace"),
        (raw or b"").decode("utf-8", "replace"),
        reason,
        received_at,
        1,
    )


def row_key(table: str, row: Row) -> str:
    """A row's natural key as text: ``customer_id=C42 event_id=ord-1``."""
    t = BY_NAME[table]
    return " ".join(f"{c}={row[t.column_names.index(c)]}" for c in t.key)


def refused_row(table: str, row: Row, reason: str, received_at: datetime | int) -> Row:
    """The dead_letters row for a row ClickHouse refused: topic ``clickhouse:<table>``,
    partition 0, offset a hash of the row's key and version (a retry rewrites the same
    dead letter), key the row's key, raw the row as JSON (DateTime values in ISO form)."""
    t = BY_NAME[table]
    values = dict(zip(t.column_names, row, strict=True))
    for name, ty in t.columns:
        if "DateTime" in ty and values[name].__class__ is int:
            with suppress(OverflowError, ValueError):  # beyond any datetime: kept as epoch ms
                values[name] = iso_ms(values[name])
    key = row_key(table, row)
    digest = hashlib.blake2b(f"{key}\0{values.get('version')}".encode(), digest_size=8)
    return dead_letter_row(
        f"clickhouse:{table}",
        0,
        int.from_bytes(digest.digest()) >> 1,
        key.encode(),
        orjson.dumps(values, default=str),
        f"ClickHouse refused this {table} row: {reason}",
        received_at,
    )


def clock_row(partition: int, stream_time_ms: int) -> Row:
    return (partition, stream_time_ms, stream_time_ms)


def cutoffs_row(c: Cutoffs, rate_median: float, amount_median: float, as_of_ms: int) -> Row:
    return (
        as_of_ms,
        c.kind,
        c.population,
        *c.r,
        *c.f,
        *c.m,
        rate_median,
        amount_median,
        as_of_ms,
    )


def sketch_row(partition: int, sketches: RfmSketches, published_at: datetime) -> Row:
    # version: publication time in ns, so a partition's newest sketch wins whichever worker
    # owns it now (shell metadata, not a result: the wall clock is fine here).
    return (
        partition,
        orjson.dumps(sketches.to_record()).decode(),
        sketches.count,
        published_at,
        int(published_at.timestamp() * 1e9),
    )


def model_params_row(
    version: int,
    model: str,
    chosen: bool,
    params: dict[str, float],
    spend: tuple[float, float, float] | None,
    calibration: tuple[float, ...] | None,
    fitted_at_ms: int,
    as_of_ms: int,
    log_likelihood: float,
    n_customers: int,
    holdout_days: int,
    holdout_customers: int,
    holdout_log_loss: float | None,
    holdout_predicted: float | None,
    holdout_actual: float | None,
    choice: str,
) -> Row:
    """One model of one fit (sinks.tables.MODEL_PARAMS); ``params`` in the model's order.
    Missing holdout figures are NaN; without a spend model p, q, v are 0 (q <= 1: unusable)."""
    nan = float("nan")
    p = list(params.values())
    return (
        version,
        model,
        int(chosen),
        orjson.dumps(params).decode(),
        *p,
        *(spend or (0.0, 0.0, 0.0)),
        int(calibration is not None),
        *(calibration or (0.0,) * 6),
        fitted_at_ms,
        as_of_ms,
        log_likelihood,
        n_customers,
        holdout_days,
        holdout_customers,
        nan if holdout_log_loss is None else holdout_log_loss,
        nan if holdout_predicted is None else holdout_predicted,
        nan if holdout_actual is None else holdout_actual,
        choice,
    )
