"""Helpers of the fault tests: generated valid and malformed input, workers that are
killed and restarted, and a drain that waits for the group's commits with a deadline."""

from __future__ import annotations

import random
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from touchstream.config import Settings
from touchstream.kafka import committed_offsets

from .streams import START, Message, valid


def touchpoints(n: int, customers: int, seed: int) -> Iterator[Message]:
    """``n`` valid events of ``customers`` customers, in event-time order: purchases
    (amounts as decimal strings and as JSON numbers), refunds, calls, complaints and
    surveys, so the state's counts and net spend have something to get wrong."""
    r = random.Random(seed)
    for i in range(n):
        cid = f"c{r.randrange(customers)}"
        at = (START + timedelta(seconds=30 * i)).isoformat().replace("+00:00", "Z")
        e: dict[str, Any] = {"event_id": f"e{i}", "customer_id": cid, "occurred_at": at}
        kind = r.random()
        if kind < 0.6:
            cents = r.randrange(1, 100_000)
            e.update(type="purchase", currency="EUR")
            e["amount"] = f"{cents // 100}.{cents % 100:02d}" if r.random() < 0.5 else cents / 100
        elif kind < 0.75:
            cents = r.randrange(1, 5_000)
            e.update(type="refund", amount=f"{cents / 100:.2f}", reason="defective")
        elif kind < 0.85:
            e.update(
                type="call",
                direction="inbound",
                reason=r.choice(["price", "service", "billing"]),
                duration_s=r.randrange(600),
                resolved=r.random() < 0.7,
            )
        elif kind < 0.93:
            e.update(
                type="complaint",
                complaint_id=f"k{i}",
                category="service",
                severity=r.randint(1, 5),
                status=r.choice(["open", "resolved"]),
            )
        else:
            e.update(type="survey", satisfaction=r.choice(["satisfied", "neutral", "dissatisfied"]))
        yield valid(e)


def committed(s: Settings, end: dict[int, int]) -> int:
    """Messages the group has committed on the input topic, over ``end``'s partitions."""
    done = committed_offsets(s.bootstrap, s.app_id, s.input_topic, end)
    return sum(min(done.get(p, 0), e) for p, e in end.items())


def tail(logs: Sequence[Path], n: int = 3000) -> str:
    return "".join(
        f"\n--- {log.name}:\n{log.read_text(errors='replace')[-n:]}" for log in logs if log.exists()
    )


def wait_for(
    what: str,
    condition: Callable[[], bool],
    alive: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    timeout: float,
    poll: float = 0.5,
) -> float:
    """Until ``condition()``, failing if a worker of ``alive`` exits or the deadline
    passes. Returns the seconds it took."""
    began = time.monotonic()
    while not condition():
        for proc in alive:
            assert proc.poll() is None, f"a worker exited ({proc.returncode}) {what}:{tail(logs)}"
        assert time.monotonic() - began < timeout, f"not {what} in {timeout} s:{tail(logs)}"
        time.sleep(poll)
    return time.monotonic() - began


def progress(
    s: Settings,
    alive: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    timeout: float = 120,
) -> float:
    """Until the group's committed offset moved on every input partition: each is being
    processed by someone."""
    every = range(s.partitions)
    before = committed_offsets(s.bootstrap, s.app_id, s.input_topic, every)

    def moved() -> bool:
        now = committed_offsets(s.bootstrap, s.app_id, s.input_topic, every)
        return all(now.get(p, 0) > before.get(p, 0) for p in every)

    return wait_for("committing on every partition", moved, alive, logs, timeout)


def drain(
    s: Settings,
    end: dict[int, int],
    alive: Sequence[subprocess.Popen[bytes]],
    logs: Sequence[Path],
    timeout: float = 180,
) -> float:
    """Until the group has committed every offset of ``end``, the workers running."""
    total = sum(end.values())
    return wait_for(
        f"drained ({total} messages)",
        lambda: committed(s, end) >= total,
        alive,
        logs,
        timeout,
    )


def kill9(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no commit, no leaving the group, nothing flushed."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def clean_logs(logs: Sequence[Path]) -> None:
    """No worker crashed or hit Faust's illegal states, whatever was done to it."""
    for log in logs:
        text = log.read_text(errors="replace")
        assert "We experienced a crash" not in text, tail([log])
        assert "IllegalStateError" not in text, tail([log])
        assert "Traceback" not in text, tail([log])


_SYNCED = re.compile(r"Successfully synced group \S+ with generation (\d+)")


def generation(log: Path) -> int:
    """The latest group generation the worker of ``log`` synced (-1: none yet; Tansu
    counts from 0)."""
    found = _SYNCED.findall(log.read_text(errors="replace")) if log.exists() else []
    return int(found[-1]) if found else -1


def assignment(log: Path, topic: str) -> set[int] | None:
    """The partitions of ``topic`` in the worker's latest assignment (Faust logs a table
    after each sync); None before the first."""
    text = log.read_text(errors="replace")
    at = text.rfind("Setting newly assigned partitions")
    if at < 0 or text.rfind("Successfully synced group") > at:
        return None  # synced again, its assignment not logged yet
    block = text[at:].split("\n\n", 1)[0]
    out: set[int] = set()
    for line in block.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and cells[1] == topic:
            for part in cells[2].strip("{}").split(","):
                lo, _, hi = part.strip().partition("-")
                out.update(range(int(lo), int(hi or lo) + 1))
    return out


def settled(logs: Sequence[Path], topic: str, partitions: int, after: int = -1) -> bool:
    """The workers of ``logs`` all synced one generation later than ``after`` and share
    the partitions of ``topic`` between them, each exactly once."""
    gens = {generation(log) for log in logs}
    if len(gens) != 1 or gens.pop() <= after:
        return False
    shares = [assignment(log, topic) for log in logs]
    if any(share is None for share in shares):
        return False
    taken = [p for share in shares for p in share]  # type: ignore[union-attr]
    return sorted(taken) == list(range(partitions))


# -- malformed input ------------------------------------------------------------------

_PLACEHOLDER = '"__VALUE__"'


def _event(r: random.Random, cid: str, n: int) -> dict[str, Any]:
    cents = r.randrange(1, 100_000)
    return {
        "event_id": f"bad{n}",
        "customer_id": cid,
        "type": "purchase",
        "occurred_at": "2024-03-01T10:00:00Z",
        "amount": f"{cents / 100:.2f}",
        "currency": "EUR",
    }


def _with_raw(event: dict[str, Any], field: str, text: str) -> bytes:
    """``event`` as JSON with ``field``'s value written as the raw JSON text ``text``
    (NaN, Infinity, 1e400: what no JSON encoder writes)."""
    return orjson.dumps({**event, field: "__VALUE__"}).replace(
        _PLACEHOLDER.encode(), text.encode(), 1
    )


def _not_an_object(data: bytes) -> bool:
    try:
        return not isinstance(orjson.loads(data), dict)
    except orjson.JSONDecodeError:
        return True


def _nested(depth: int, r: random.Random) -> str:
    if r.random() < 0.5:
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


_BAD_TIMES = [
    "0001-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "2106-02-07T06:28:16Z",
    "2106-03-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
    "2099-06-01T00:00:00Z",  # storable, but decades after it was received
    "2024-03-01T10:00:00",  # naive
    "2024-02-30T10:00:00Z",
    "2024-03-01",
    "",
]
_BAD_AMOUNTS_RAW = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"]
_BAD_AMOUNTS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "10000000000.0001",
    "99999999999999.9999",
    1e11,
    "-0.01",
    -5,
    "1.23456",
    0.00001,
    True,
    None,
    "",
    "twelve",
    [1],
]
# Fields with a value of the wrong JSON type, per event type (strict types: docs/events.md).
_WRONG_TYPES: list[tuple[dict[str, Any], str, Any]] = [
    (
        {"type": "call", "direction": "inbound", "reason": "price", "duration_s": 10},
        "resolved",
        "yes",
    ),
    (
        {"type": "call", "direction": "inbound", "reason": "price", "resolved": True},
        "duration_s",
        "10",
    ),
    (
        {"type": "complaint", "complaint_id": "k", "category": "price", "status": "open"},
        "severity",
        "3",
    ),
    (
        {"type": "complaint", "complaint_id": "k", "category": "price", "status": "open"},
        "severity",
        True,
    ),
    ({"type": "survey"}, "satisfaction", 5),
    ({"type": "account"}, "change", None),
    ({}, "occurred_at", 1709287200),
    ({}, "event_id", 42),
    ({}, "type", 7),
    ({}, "currency", 978),
    ({}, "discount", "0.1"),
    ({}, "amount", {"value": "1.00"}),
]


def malformed(n: int, customers: Sequence[str], seed: int, huge: int = 4) -> Iterator[Message]:
    """``n`` messages that are not valid events, drawn with a seeded RNG from every kind of
    bad input (random bytes, truncated and deeply nested JSON, invalid UTF-8, NaN and
    overflowing amounts, unstorable dates, missing and wrong keys, broken CloudEvents,
    wrong types), ``huge`` of them 1 MB values. Keyed by one of ``customers`` unless the
    key is what is wrong."""
    r = random.Random(seed)
    kinds = [
        "random bytes",
        "truncated JSON",
        "deeply nested JSON",
        "invalid UTF-8",
        "NaN or overflowing amount",
        "unstorable or malformed date",
        "empty or null key",
        "broken CloudEvent",
        "wrong type",
        "not an object",
        "unknown or missing type",
    ]
    for i in range(n):
        cid = r.choice(customers)
        key: bytes | None = cid.encode()
        ev = _event(r, cid, i)
        if i < huge:  # 1 MB each
            what = "1 MB value"
            big = "x" * 1_000_000
            value: bytes | None = [
                big.encode(),  # not JSON
                orjson.dumps({**ev, "customer_id": big}),  # customer_id over 128 characters
                orjson.dumps({**ev, "event_id": big}),  # event_id over 256 characters
                orjson.dumps([ev] * 6000),  # a JSON array of events, not one object
            ][i % 4]
            yield Message(key, value, None, what)
            continue
        what = r.choice(kinds)
        if what == "random bytes":
            value = r.randbytes(r.randrange(0, 300))
            while not _not_an_object(value):
                value = r.randbytes(r.randrange(1, 300))
        elif what == "truncated JSON":
            whole = orjson.dumps(ev)
            value = whole[: r.randrange(1, len(whole))]
        elif what == "deeply nested JSON":
            depth = r.choice([1025, 5000, 10_000])
            value = (
                _nested(depth, r).encode()
                if r.random() < 0.5
                else _with_raw(ev, "extra", _nested(depth, r))
            )
        elif what == "invalid UTF-8":
            bad = r.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf0\x28\x8c\x28", b"\x80"])
            whole = orjson.dumps(ev)
            at = whole.index(b'"EUR"') + 2
            value = whole[:at] + bad + whole[at:]
        elif what == "NaN or overflowing amount":
            if r.random() < 0.4:
                value = _with_raw(ev, "amount", r.choice(_BAD_AMOUNTS_RAW))
            else:
                value = orjson.dumps({**ev, "amount": r.choice(_BAD_AMOUNTS)})
        elif what == "unstorable or malformed date":
            value = orjson.dumps({**ev, "occurred_at": r.choice(_BAD_TIMES)})
        elif what == "empty or null key":
            choice = r.randrange(4)
            if choice == 0:
                key = None  # a valid event without a key
            elif choice == 1:
                key = b""
            elif choice == 2:
                key = b""
                ev = {**ev, "customer_id": ""}
            else:
                key = r.choice(customers).encode() + b"-other"  # another customer's key
            value = orjson.dumps(ev)
            if choice == 0 and r.random() < 0.5:
                key, value = cid.encode(), None  # a key and no value (a tombstone)
        elif what == "broken CloudEvent":
            ce: dict[str, Any] = {
                "specversion": "1.0",
                "id": ev["event_id"],
                "source": "test",
                "type": "com.touchstream.purchase",
                "subject": cid,
                "time": ev["occurred_at"],
                "data": {"amount": ev["amount"], "currency": "EUR"},
            }
            broken = r.choice(
                [
                    ("specversion", "0.3"),
                    ("specversion", 1.0),
                    ("data", [1, 2]),
                    ("data", "amount=1"),
                    ("type", "com.touchstream.teleport"),
                    ("subject", None),
                    ("time", None),
                    ("time", "yesterday"),
                    ("id", None),
                ]
            )
            ce[broken[0]] = broken[1]
            value = orjson.dumps({k: v for k, v in ce.items() if v is not None})
        elif what == "wrong type":
            fields, field, bad_value = r.choice(_WRONG_TYPES)
            base = {k: v for k, v in ev.items() if not fields or k not in ("amount", "currency")}
            value = orjson.dumps({**base, **fields, field: bad_value})
        elif what == "not an object":
            value = orjson.dumps(r.choice([[ev], "purchase", 42, None, True, []]))
        else:  # unknown or missing type
            value = orjson.dumps(
                {k: v for k, v in ev.items() if k != "type"}
                if r.random() < 0.5
                else {**ev, "type": r.choice(["teleport", "Purchase", "", "purchases"])}
            )
        yield Message(key, value, None, what)


def interleave(good: Iterator[Message], bad: Iterator[Message], seed: int) -> Iterator[Message]:
    """Both streams mixed at random (seeded), each in its own order."""
    r = random.Random(seed)
    goods, bads = list(good), list(bad)
    slots = [True] * len(goods) + [False] * len(bads)
    r.shuffle(slots)
    gi = bi = 0
    for is_good in slots:
        if is_good:
            yield goods[gi]
            gi += 1
        else:
            yield bads[bi]
            bi += 1
