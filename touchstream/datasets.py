"""Input data as touchpoint events (plain dicts in the event contract): the CDNOW data
set shipped in the lifetimes wheel, a small synthetic touchpoint sample, and files."""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from schemas.decode import from_text_cells


def cdnow_path() -> Path:
    """CDNOW_master.txt from the lifetimes package (69,659 purchases, 23,570 customers)."""
    import importlib.util

    spec = importlib.util.find_spec("lifetimes")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the lifetimes package (which ships CDNOW) is not installed")
    return Path(spec.origin).parent / "datasets" / "CDNOW_master.txt"


def cdnow_events(path: Path | None = None) -> Iterator[dict[str, Any]]:
    """One purchase per line: ``customer_id YYYYMMDD quantity dollars``. Dates carry no
    time, so each purchase is at 00:00 UTC of its day; event ids are the line numbers."""
    with (path or cdnow_path()).open() as f:
        for n, line in enumerate(f, start=1):
            parts = line.split()
            if len(parts) != 4 or not parts[1].isdigit():
                continue  # header
            cid, day, qty, amount = parts
            yield {
                "event_id": f"cdnow-{n}",
                "customer_id": cid,
                "type": "purchase",
                "occurred_at": f"{day[:4]}-{day[4:6]}-{day[6:]}T00:00:00Z",
                "amount": amount,
                "currency": "USD",
                "category": "music",
                "channel": "catalog",
                "quantity": int(qty),  # not in the contract: kept as an ignored extra
                "source": "cdnow",
            }


def sample_events(
    customers: int = 300, start: datetime | None = None, days: int = 180, seed: int = 7
) -> Iterator[dict[str, Any]]:
    """A small, deterministic mix of every touchpoint type, for demos."""
    rng = random.Random(seed)
    t0 = start or datetime(1998, 1, 1, tzinfo=UTC)
    n = 0

    def ev(cid: str, kind: str, at: datetime, **fields: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        return {
            "event_id": f"sample-{n}",
            "customer_id": cid,
            "type": kind,
            "occurred_at": at.isoformat().replace("+00:00", "Z"),
            "source": "sample",
            **fields,
        }

    out: list[dict[str, Any]] = []
    for i in range(customers):
        cid = f"S{i:05d}"
        at = t0 + timedelta(days=rng.uniform(0, 30))
        while at < t0 + timedelta(days=days):
            r = rng.random()
            if r < 0.6:
                out.append(
                    ev(
                        cid,
                        "purchase",
                        at,
                        amount=f"{rng.uniform(5, 120):.2f}",
                        currency="USD",
                        discount=rng.choice([None, 0.1, 0.3]),
                        category=rng.choice(["books", "music", "games"]),
                        channel=rng.choice(["web", "store", "app"]),
                    )
                )
            elif r < 0.72:
                out.append(
                    ev(
                        cid,
                        "call",
                        at,
                        direction="inbound",
                        reason=rng.choice(["price", "product", "service", "billing"]),
                        duration_s=rng.randint(30, 900),
                        wait_s=rng.randint(0, 600),
                        resolved=rng.random() < 0.7,
                    )
                )
            elif r < 0.8:
                out.append(
                    ev(
                        cid,
                        "complaint",
                        at,
                        complaint_id=f"C{n}",
                        category=rng.choice(["price", "product", "service", "other"]),
                        severity=rng.randint(1, 5),
                        status=rng.choice(["open", "resolved", "rejected"]),
                    )
                )
            elif r < 0.87:
                out.append(
                    ev(
                        cid,
                        "refund",
                        at,
                        amount=f"{rng.uniform(5, 40):.2f}",
                        reason=rng.choice(
                            ["defective", "not_as_described", "price", "changed_mind"]
                        ),
                    )
                )
            elif r < 0.97:
                out.append(
                    ev(
                        cid,
                        "survey",
                        at,
                        satisfaction=rng.choice(
                            [
                                "very_satisfied",
                                "satisfied",
                                "fairly_satisfied",
                                "neutral",
                                "fairly_dissatisfied",
                                "dissatisfied",
                                "very_dissatisfied",
                            ]
                        ),
                    )
                )
            else:
                out.append(
                    ev(
                        cid,
                        "account",
                        at,
                        change=rng.choice(["moved", "contact_changed", "life_event"]),
                    )
                )
            at += timedelta(days=rng.expovariate(1 / 12))
    out.sort(key=lambda e: e["occurred_at"])
    yield from out


# A few messages that must land in the dead letters, each for a different reason.
BAD_SAMPLES: list[bytes] = [
    b"{not json",
    b'{"event_id":"bad-1","customer_id":"S00001","type":"purchase",'
    b'"occurred_at":"1998-03-01T10:00:00","amount":"10","currency":"USD"}',
    b'{"event_id":"bad-2","customer_id":"S00002","type":"purchase",'
    b'"occurred_at":"1998-03-01T10:00:00Z","amount":"-5","currency":"USD"}',
    b'{"event_id":"bad-3","customer_id":"S00003","type":"teleport",'
    b'"occurred_at":"1998-03-01T10:00:00Z"}',
    b'{"event_id":"bad-4","type":"survey","occurred_at":"1998-03-01T10:00:00Z",'
    b'"satisfaction":"neutral"}',
]


def read_file(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, object) from JSONL or CSV (by extension). Undecodable lines come
    back as (line, exception) so the caller can report them."""
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            for i, row in enumerate(csv.DictReader(f), start=2):
                # Text cells typed as JSON would have them ("120" a number, "true" a boolean).
                yield i, from_text_cells({k: v for k, v in row.items() if v not in ("", None)})
        return
    with path.open("rb") as f:
        for i, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield i, orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield i, e
