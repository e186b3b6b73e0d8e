"""One batch of raw Kafka messages -> state updates, ClickHouse rows, dead letters.

This is the worker's hot path without Faust: decode, validate, route by customer,
fold the domain's step function once per customer, and encode each changed state once
per batch. The Faust agent (agents/app.py) only feeds it messages and applies its
result, so the same code runs in tests, benchmarks and production.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from schemas.decode import Rejected, decode
from schemas.events import epoch_ms
from sinks.base import Row
from sinks.rows import clock_row, dead_letter_row, event_row, state_row
from touchstream.domain.rfm import Accepted, CustomerState, from_record, step, to_record


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Stored:
    """What the table holds per customer: the domain state and the transport position
    (partition, offset) of the last message applied, so a redelivered message is skipped
    exactly, whatever its event id."""

    state: CustomerState
    partition: int
    offset: int

    def encode(self) -> bytes:
        return orjson.dumps([self.partition, self.offset, to_record(self.state)])

    @staticmethod
    def decode(raw: bytes) -> Stored:
        partition, offset, rec = orjson.loads(raw)
        return Stored(from_record(rec), partition, offset)


@dataclass
class BatchResult:
    states: dict[str, bytes] = field(default_factory=dict)  # customer_id -> Stored bytes
    rows: dict[str, list[Row]] = field(default_factory=dict)  # table -> rows
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, value)
    accepted: int = 0
    duplicates: int = 0
    redelivered: int = 0
    rejected: int = 0


def dead_letter_envelope(m: RawMessage, reason: str) -> bytes:
    """The dead-letter topic's value: where it came from, why, and the raw bytes."""
    raw = m.value or b""
    try:
        text: str | None = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return orjson.dumps(
        {
            "reason": reason,
            "topic": m.topic,
            "partition": m.partition,
            "offset": m.offset,
            "key": (m.key or b"").decode("utf-8", "replace"),
            "raw": text,
            "raw_base64": base64.b64encode(raw).decode(),
        }
    )


class Processor:
    """Holds stream time per partition; everything else lives in the table it is given."""

    def __init__(self) -> None:
        self.stream_time: dict[int, int] = {}

    def process(
        self,
        messages: Sequence[RawMessage],
        load: Callable[[str], bytes | None],
        received_at: datetime,
    ) -> BatchResult:
        out = BatchResult()
        events_rows: list[Row] = []
        dead_rows: list[Row] = []
        current: dict[str, Stored | None] = {}
        changed: set[str] = set()  # customers whose state version moved (not just offset)
        clocks: dict[int, int] = {}

        for m in messages:
            ev = decode(m.value)
            if not isinstance(ev, Rejected):
                key = m.key.decode("utf-8", "replace") if m.key is not None else None
                if key != ev.customer_id:
                    ev = Rejected(
                        f"message key {key!r} is not the customer_id {ev.customer_id!r}: "
                        "key each message by its customer_id"
                    )
            if isinstance(ev, Rejected):
                out.rejected += 1
                out.dead_letters.append((m.key, dead_letter_envelope(m, ev.reason)))
                dead_rows.append(
                    dead_letter_row(
                        m.topic, m.partition, m.offset, m.key, m.value, ev.reason, received_at
                    )
                )
                continue

            cid = ev.customer_id
            if cid in current:
                stored = current[cid]
            else:
                raw = load(cid)
                stored = Stored.decode(raw) if raw is not None else None
            if stored is not None and stored.partition == m.partition and m.offset <= stored.offset:
                out.redelivered += 1
                continue
            t = epoch_ms(ev.occurred_at)
            if t > clocks.get(m.partition, self.stream_time.get(m.partition, 0)):
                clocks[m.partition] = t
            new_state, outputs = step(stored.state if stored else None, ev)
            if stored is None or new_state.version != stored.state.version:
                changed.add(cid)
            current[cid] = Stored(new_state, m.partition, m.offset)
            for o in outputs:
                if isinstance(o, Accepted):
                    out.accepted += 1
                    events_rows.append(event_row(o.event, o.version, m.partition, m.offset))
                else:
                    out.duplicates += 1

        for cid, stored in current.items():
            if stored is not None:
                out.states[cid] = stored.encode()
        self.stream_time.update(clocks)
        out.rows = {
            "events": events_rows,
            "customer_state": [
                state_row(s.state) for c, s in current.items() if c in changed and s
            ],
            "dead_letters": dead_rows,
            "stream_clock": [clock_row(p, t) for p, t in clocks.items()],
        }
        return out
