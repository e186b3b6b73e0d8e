"""docs/alert.schema.json matches Alert.to_json exactly (docs/alerts.md).

jsonschema is not a dependency: a small validator below covers the keywords the schema
uses (type, const, enum, required, properties, additionalProperties false, items,
minimum, maximum, minLength, maxLength, pattern), and a test keeps it to that subset.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from touchstream.domain.alerts import ALERT_SCHEMA_VERSION, KINDS, SEVERITY_LABELS, Alert
from touchstream.domain.defection import TYPES
from touchstream.domain.lifecycle import ACTIVE, CHURNED, DECLINE
from touchstream.domain.messages import alert_json

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "alert.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "integer": int,
    "number": (int, float),
}
_ANNOTATIONS = {"$schema", "$id", "title", "description", "format"}
_CHECKED = {
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
}


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    return isinstance(value, _TYPES[name])


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """The subset of JSON Schema 2020-12 the alert schema uses; [] when valid."""
    out: list[str] = []
    if "type" in schema:
        names = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is(value, n) for n in names):
            return [f"{path}: {value!r} is not of type {names}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: {value!r} != {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: {value!r} does not match {schema['pattern']}")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            out.extend(errors(v, schema["items"], f"{path}[{i}]"))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out.extend(f"{path}: missing {k!r}" for k in schema.get("required", ()) if k not in value)
        for k, v in value.items():
            if k in props:
                out.extend(errors(v, props[k], f"{path}.{k}"))
            elif schema.get("additionalProperties", True) is False:
                out.append(f"{path}: unexpected {k!r}")
    return out


def make_alert(**changes: Any) -> Alert:
    base: dict[str, Any] = {
        "alert_id": "c-42/1/decline",
        "customer_id": "c-42",
        "at_ms": 1_581_328_800_000,
        "kind": "decline",
        "episode": 1,
        "stage": DECLINE,
        "previous_stage": "formation",
        "defection_type": "product",
        "confidence": 0.71,
        "severity": 3,
        "net_spend": Decimal("680.50"),
        "last_purchase_ms": 1_578_736_800_000,
        "evidence": ("2020-01-12 complaint:product:5", "2020-01-13 refund:defective"),
        "message": "Customer c-42 (net spend 680.50) is declining after 30 days without a "
        "purchase: likely product defection (confidence 0.71).",
        "version": 4,
    }
    base.update(changes)
    return Alert(**base)


def _keywords(schema: Any) -> set[str]:
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for sub in (*schema.get("properties", {}).values(), schema.get("items")):
        found |= _keywords(sub)
    return found


def test_the_schema_uses_only_keywords_the_test_validator_checks() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert _keywords(SCHEMA) <= _CHECKED | _ANNOTATIONS


def test_a_decline_alert_is_valid() -> None:
    msg = alert_json(make_alert())
    assert errors(msg, SCHEMA) == []
    # as a consumer sees it: the bytes on the topic, decoded again
    assert errors(orjson.loads(orjson.dumps(msg)), SCHEMA) == []


@pytest.mark.parametrize(
    "changes",
    [
        {
            "alert_id": "c-42/2/churn_risk",
            "kind": "churn_risk",
            "episode": 2,
            "stage": "stability",
            "previous_stage": "stability",
            "defection_type": "unknown",
            "confidence": 1.0,
            "evidence": (),
        },
        {
            "alert_id": "c-42/1/churned",
            "kind": "churned",
            "stage": CHURNED,
            "previous_stage": DECLINE,
            "at_ms": 1_586_512_800_123,
        },
        {
            "alert_id": "c-42/1/recovered",
            "kind": "recovered",
            "stage": "exploration",
            "previous_stage": CHURNED,
            "defection_type": "unknown",
            "confidence": 0.0,
            "evidence": (),
            "severity": 1,
            "net_spend": Decimal("-5"),
        },
        {
            "last_purchase_ms": None,
            "previous_stage": None,
            "severity": 4,
            "net_spend": Decimal("1E+3"),
        },
        {"churn_probability_90d": 0.83, "value_at_risk": 120.5},
        {"churn_probability_90d": 0.4, "value_at_risk": None},
    ],
)
def test_every_kind_and_the_optional_values_are_valid(changes: dict[str, Any]) -> None:
    assert errors(alert_json(make_alert(**changes)), SCHEMA) == []


def test_the_schema_lists_exactly_the_fields_of_the_alert_message() -> None:
    msg = alert_json(make_alert())
    assert set(msg) <= set(SCHEMA["properties"]), "a to_json field is missing in the schema"
    assert set(SCHEMA["required"]) <= set(msg), "a required field is missing in to_json"
    assert set(SCHEMA["required"]) == set(SCHEMA["properties"])
    assert SCHEMA["additionalProperties"] is False


def test_the_enums_follow_the_domain() -> None:
    props = SCHEMA["properties"]
    assert tuple(props["kind"]["enum"]) == KINDS
    assert tuple(props["severity_label"]["enum"]) == SEVERITY_LABELS
    assert set(props["defection_type"]["enum"]) == {*TYPES, "unknown"}
    assert set(props["stage"]["enum"]) == {*ACTIVE, DECLINE, CHURNED}
    assert props["schema_version"]["const"] == ALERT_SCHEMA_VERSION


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "escalated"},
        {"severity": 5},
        {"severity": True},
        {"confidence": 1.5},
        {"stage": ""},
        {"at": "2020-02-10T10:00:00+00:00"},
        {"net_spend": 680.5},
        {"evidence": [1]},
        {"schema_version": 2},
        {"unexpected": 1},
        {"churn_probability_90d": 1.2},
        {"value_at_risk": "12"},
    ],
)
def test_the_validator_rejects_what_the_schema_forbids(bad: dict[str, Any]) -> None:
    assert errors({**alert_json(make_alert()), **bad}, SCHEMA)


def test_the_validator_rejects_a_missing_field() -> None:
    msg = alert_json(make_alert())
    del msg["alert_id"]
    assert errors(msg, SCHEMA) == ["$: missing 'alert_id'"]


def test_alerts_raised_by_the_state_machine_are_valid() -> None:
    from schemas.decode import decode
    from tests.steps import step

    def ev(i: int, at: str, type_: str, **fields: Any) -> Any:
        return decode(
            orjson.dumps(
                {
                    "event_id": str(i),
                    "customer_id": "c-7",
                    "type": type_,
                    "occurred_at": at,
                    **fields,
                }
            )
        )

    stream = [
        ev(1, "2020-01-01T10:00:00Z", "purchase", amount="450.25", currency="EUR"),
        ev(2, "2020-01-11T10:00:00Z", "purchase", amount=250, currency="EUR"),
        ev(
            3,
            "2020-01-12T10:00:00Z",
            "complaint",
            complaint_id="k",
            category="product",
            severity=5,
            status="open",
        ),
        ev(4, "2020-01-13T10:00:00Z", "refund", amount=20, reason="defective"),
        ev(5, "2020-12-01T10:00:00Z", "purchase", amount=30, currency="EUR"),
    ]
    state, alerts = None, []
    for e in stream:
        state, outs = step(state, e)
        alerts += [o for o in outs if isinstance(o, Alert)]
    assert [a.kind for a in alerts] == ["churn_risk", "decline", "churned", "recovered"]
    for a in alerts:
        assert errors(alert_json(a), SCHEMA) == [], a
