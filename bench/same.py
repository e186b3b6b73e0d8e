"""The peers' same logic: touchstream's own per-event work, one event at a time, for the
``faust-same`` and ``quix-same`` jobs, and the check that they did the work
touchstream's processor did.

``step`` is, per event, what ``agents.processor`` does per event: ``schemas.decode.decode``
(JSON parse and validation into the event model), the message key checked against the
customer_id, the customer's stored bytes decoded (``touchstream.domain.codec``; a
redelivered offset skipped), ``touchstream.domain.update.apply`` (the domain's reference
step, the one the processor calls for every event: dedup, the customer's own deadlines
due before the event, RFM, lifecycle, defection signals, complaints, risk checks), and
the state encoded again. What the processor does per batch and these peers do not: its
cache of decoded states (it decodes a customer once per batch at most, and often not at
all), the silence deadlines of customers without events fired by partition stream time,
the RFM sketches, ClickHouse rows and output topics. Neither peer writes ClickHouse.

Imported by bench/quix_same.py under quixstreams' interpreter (pydantic<2.14), so it
imports only the event contract, the domain and the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from schemas.decode import Rejected, decode
from schemas.events import epoch_ms
from touchstream.domain import codec
from touchstream.domain.customer import Working
from touchstream.domain.lifecycle import Rules
from touchstream.domain.update import apply


def step(
    load: Callable[[str], bytes | None],
    key: bytes | None,
    value: bytes,
    partition: int,
    offset: int,
    rules: Rules,
) -> tuple[str, bytes] | None:
    """One event: the customer id and its new encoded state to store, or None when
    there is nothing to store (a rejected message, a redelivery)."""
    ev = decode(value)
    if ev.__class__ is Rejected:
        return None
    cid: str = ev.customer_id  # type: ignore[union-attr]
    if key is None or key.decode("utf-8", "replace") != cid:
        return None
    stored = load(cid)
    if stored:
        work, _, last = codec.decode(stored)
        if offset <= last:
            return None
    else:
        work = Working(cid)
    apply(work, ev, epoch_ms(ev.occurred_at), rules)  # type: ignore[arg-type, union-attr]
    return cid, codec.encode(work, partition, offset)


class Figures(NamedTuple):
    """What the events made of one customer, whichever way they were applied: the
    distinct events counted (``version``), purchases, refunds and their totals. Silence
    deadlines (fired by the processor on stream time, by the peers only at the customer's
    next event) move the lifecycle stage, never these."""

    version: int
    purchases: int
    refunds: int
    purchase_total: Decimal
    refund_total: Decimal


def figures(states: Iterable[bytes]) -> dict[str, tuple[Figures, str | None]]:
    """Per customer, its Figures and its lifecycle stage, from encoded states."""
    out: dict[str, tuple[Figures, str | None]] = {}
    for raw in states:
        w = codec.decode(raw)[0]
        out[w.customer_id] = (
            Figures(w.version, w.purchases, w.refunds, w.purchase_total, w.refund_total),
            w.stage,
        )
    return out


def last_values(records: Iterable[tuple[bytes | None, bytes | None]]) -> list[bytes]:
    """The values a compacted changelog keeps: the last one of each key (a None value
    deletes the key)."""
    last = dict(records)
    return [v for v in last.values() if v is not None]


@dataclass(frozen=True)
class Totals:
    customers: int
    events: int
    purchases: int
    refunds: int
    net_spend: Decimal

    @classmethod
    def of(cls, figs: Iterable[Figures]) -> Totals:
        customers = events = purchases = refunds = 0
        net = Decimal(0)
        for f in figs:
            customers += 1
            events += f.version
            purchases += f.purchases
            refunds += f.refunds
            net += f.purchase_total - f.refund_total
        return cls(customers, events, purchases, refunds, net)

    def __str__(self) -> str:
        return (
            f"{self.customers:,} customers, {self.events:,} events, {self.purchases:,} "
            f"purchases, {self.refunds:,} refunds, net spend {self.net_spend:,}"
        )


@dataclass(frozen=True)
class Check:
    """A peer's final per-customer state against the processor's."""

    expected: Totals
    got: Totals
    differing: int  # customers in both whose Figures differ
    missing: int  # customers the peer does not have
    extra: int  # customers only the peer has
    same_stage: int  # customers in both at the same lifecycle stage (information only)
    example: str | None  # one differing customer, for the reader

    @property
    def equal(self) -> bool:
        return not (self.differing or self.missing or self.extra)

    def line(self) -> str:
        if self.equal:
            stage = self.same_stage / max(1, self.expected.customers)
            return (
                f"equal work: every customer's figures equal the processor's ({self.got}); "
                f"{stage:.1%} at the same lifecycle stage"
            )
        return (
            f"NOT equal work: {self.differing:,} customers differ, {self.missing:,} "
            f"missing, {self.extra:,} extra (processor: {self.expected}; peer: {self.got})"
            + (f"; e.g. {self.example}" if self.example else "")
        )


def equal_work(
    expected: Mapping[str, tuple[Figures, str | None]],
    got: Mapping[str, tuple[Figures, str | None]],
) -> Check:
    """Compare a peer's customers (``figures`` of its final states) with the
    processor's, customer by customer."""
    differing = same_stage = 0
    example = None
    for cid, (want, stage) in expected.items():
        have = got.get(cid)
        if have is None:
            continue
        if have[0] != want:
            differing += 1
            if example is None:
                example = f"{cid}: processor {tuple(want)}, peer {tuple(have[0])}"
        elif have[1] == stage:
            same_stage += 1
    return Check(
        Totals.of(f for f, _ in expected.values()),
        Totals.of(f for f, _ in got.values()),
        differing,
        sum(1 for cid in expected if cid not in got),
        sum(1 for cid in got if cid not in expected),
        same_stage,
        example,
    )
