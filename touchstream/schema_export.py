"""The event contract as a JSON Schema, for producers in other languages.

``python -m touchstream.schema_export`` regenerates docs/event.schema.json from
schemas/events.py; a unit test fails when the committed file and the models disagree.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import touchstream  # noqa: F401  (puts this repository first on sys.path)
from schemas.events import EVENT_ADAPTER

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "event.schema.json"
SCHEMA_ID = "urn:touchstream:schema:event"
DESCRIPTION = (
    "One touchpoint event: the JSON value of one Kafka message, keyed by customer_id. "
    "A tagged union on `type` (purchase, call, complaint, refund, survey, account). "
    "occurred_at must carry a timezone offset; naive timestamps are rejected. "
    "Money amounts may be JSON strings (exact) or numbers. "
    "Unknown extra fields are accepted and ignored, so producers may add fields freely. "
    "Generated from schemas/events.py by `python -m touchstream.schema_export`."
)


def event_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one event, as pydantic validates it."""
    schema = EVENT_ADAPTER.json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "touchstream event",
        "description": DESCRIPTION,
        **schema,
    }


def render(schema: dict[str, Any]) -> str:
    """The committed form: indented, sorted keys, a trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(path: Path = SCHEMA_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(event_json_schema()), encoding="utf-8")
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
