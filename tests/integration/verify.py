"""What a fault may not change: after the stream is drained, ClickHouse holds every valid
event exactly once, each customer's counts and net spend equal a tally of the input, and
every malformed message is a dead letter with a reason.

The tally is plain Python over the produced dicts, not touchstream's domain: a bug there
must not be able to agree with itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sinks import open_sink

from .streams import Sent


@dataclass
class Tally:
    events: int = 0
    purchases: int = 0
    refunds: int = 0
    purchase_total: Decimal = Decimal(0)
    refund_total: Decimal = Decimal(0)

    @property
    def net_spend(self) -> Decimal:
        return self.purchase_total - self.refund_total


def amount(value: Any) -> Decimal:
    # A JSON number is read by its shortest repr (19.99, not the binary float's expansion).
    return Decimal(value.strip() if isinstance(value, str) else repr(value))


def tally(events: Iterable[dict[str, Any]]) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for e in events:
        t = out.setdefault(e["customer_id"], Tally())
        t.events += 1
        if e["type"] == "purchase":
            t.purchases += 1
            t.purchase_total += amount(e["amount"])
        elif e["type"] == "refund":
            t.refunds += 1
            t.refund_total += amount(e["amount"])
    return out


@dataclass
class Report:
    """What ClickHouse held, for the test's own further checks."""

    events: int
    customers: int
    dead_letters: int
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)


def _sample(items: Iterable[Any], n: int = 5) -> list[Any]:
    return sorted(items, key=repr)[:n]


def verify(clickhouse_url: str, topic: str, sent: list[Sent]) -> Report:
    """Check ClickHouse against everything ``sent`` to ``topic``: the messages with an
    event are valid, the others malformed. Raises AssertionError naming what differs."""
    events = [s.message.event for s in sent if s.message.event is not None]
    malformed = {(s.partition, s.offset): s.message.what for s in sent if s.message.event is None}
    expected = Counter((e["customer_id"], e["event_id"]) for e in events)
    assert all(n == 1 for n in expected.values()), "the test sent an event_id twice"
    want = tally(events)
    with open_sink(clickhouse_url) as sink:
        db = sink.database
        _, rows = sink.query(f"SELECT customer_id, event_id FROM {db}.events FINAL")
        _, states = sink.query(
            "SELECT customer_id, version, purchases, refunds, toString(purchase_total), "
            f"toString(refund_total), toString(net_spend) FROM {db}.customer_state FINAL"
        )
        _, dead = sink.query(
            f"SELECT topic, partition, offset, reason FROM {db}.dead_letters FINAL"
        )
    problems = []

    stored = Counter((r[0], r[1]) for r in rows)
    missing = set(expected) - set(stored)
    extra = set(stored) - set(expected)
    twice = {k: n for k, n in stored.items() if n > 1}
    if missing:
        where = {
            (s.message.event["customer_id"], s.message.event["event_id"]): (s.partition, s.offset)
            for s in sent
            if s.message.event is not None
        }
        ranges: dict[int, list[int]] = {}
        for k in missing:
            p, o = where[k]
            ranges.setdefault(p, []).append(o)
        spans = {p: (min(o), max(o), len(o)) for p, o in sorted(ranges.items())}
        problems.append(
            f"{len(missing)} valid events missing from events FINAL: {_sample(missing)}; "
            f"by partition (first offset, last offset, count): {spans}"
        )
    if extra:
        problems.append(f"{len(extra)} events FINAL rows that were never sent: {_sample(extra)}")
    if twice:
        problems.append(f"{len(twice)} events twice in events FINAL: {_sample(twice.items())}")

    have = {
        c: (v, p, r, Decimal(pt), Decimal(rt), Decimal(net)) for c, v, p, r, pt, rt, net in states
    }
    wanted = {
        c: (t.events, t.purchases, t.refunds, t.purchase_total, t.refund_total, t.net_spend)
        for c, t in want.items()
    }
    wrong = {
        c: {"clickhouse": have.get(c), "tally": wanted.get(c)}
        for c in set(have) | set(wanted)
        if have.get(c) != wanted.get(c)
    }
    if wrong:
        over = sum(
            1
            for w in wrong.values()
            if w["clickhouse"] and w["tally"] and w["clickhouse"][0] > w["tally"][0]
        )
        problems.append(
            f"{len(wrong)} customers' state differ from the tally of the input "
            f"(version, purchases, refunds, purchase_total, refund_total, net_spend; "
            f"{over} with more events applied than sent): {_sample(wrong.items(), 3)}"
        )

    reasons = {(p, o): reason for t, p, o, reason in dead if t == topic}
    others = [(t, p, o, reason) for t, p, o, reason in dead if t != topic]
    unlettered = set(malformed) - set(reasons)
    if unlettered:
        problems.append(
            f"{len(unlettered)} malformed messages not in dead_letters: "
            f"{_sample((k, malformed[k]) for k in unlettered)}"
        )
    valid_positions = {(s.partition, s.offset) for s in sent if s.message.event is not None}
    lettered_valid = valid_positions & set(reasons)
    if lettered_valid:
        problems.append(
            f"{len(lettered_valid)} valid events dead-lettered: "
            f"{_sample((k, reasons[k]) for k in lettered_valid)}"
        )
    blank = [k for k in malformed if k in reasons and not reasons[k].strip()]
    if blank:
        problems.append(f"{len(blank)} dead letters without a reason: {_sample(blank)}")
    if others:
        problems.append(f"{len(others)} rows ClickHouse refused: {_sample(others, 3)}")
    assert not problems, "\n".join(problems)
    return Report(len(rows), len(have), len(dead), {k: reasons[k] for k in malformed})
