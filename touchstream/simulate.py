"""`touchstream simulate`: a synthetic touchpoint stream with planted ground truth.

Archetypes (shares of the population by default):
- loyal (40%): buys every 7-30 days (+-30%) for the whole period; a little noise
  (satisfied surveys, a mild resolved complaint). Truth: stability, never alerted.
- grower (10%): starts in the first 40% of the period, gaps shrink from ~45 to ~15 days.
  Truth: stability.
- one_off (15%): one purchase in the first 55%. Truth: churned, defection unknown.
- price / product / service / self_change defectors (7.5% each): an established
  relationship, then 30-70 days of the evidence domain.md names for that type, then no
  more purchases (in the first 60%). Truth: churned with that defection type.
- wobbler (5%): loyal, then one silence of 4-5 typical gaps in the second half, then
  back. Truth: stability, alerted once (decline) and recovered.

The truth file has one JSON line per customer. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 730

MIX = {
    "loyal": 0.40,
    "grower": 0.10,
    "one_off": 0.15,
    "price": 0.075,
    "product": 0.075,
    "service": 0.075,
    "self_change": 0.075,
    "wobbler": 0.05,
}
DEFECTORS = ("price", "product", "service", "self_change")


@dataclass(frozen=True)
class Truth:
    customer_id: str
    archetype: str
    stage: str  # the stage the customer should be in at the end
    defection: str | None  # price | product | service | self_change | unknown | None
    alerted: bool  # should the customer get a churn alert at all
    last_purchase_at: str
    signals: tuple[str, ...] = ()  # behaviour stream: the defection signals the customer showed
    stream: str = "rules"  # which simulator: rules (this module) or behaviour

    def __post_init__(self) -> None:  # from JSON, signals come as a list
        object.__setattr__(self, "signals", tuple(self.signals))


class _Gen:
    def __init__(self, rng: random.Random, cid: str) -> None:
        self.rng, self.cid, self.n = rng, cid, 0
        self.events: list[dict[str, Any]] = []
        self.last_purchase: datetime | None = None

    def add(self, kind: str, at: datetime, **fields: Any) -> None:
        self.n += 1
        self.events.append(
            {
                "event_id": f"{self.cid}-{self.n}",
                "customer_id": self.cid,
                "type": kind,
                "occurred_at": at.isoformat().replace("+00:00", "Z"),
                "source": "simulate",
                **fields,
            }
        )

    def purchase(
        self,
        at: datetime,
        amount: float | None = None,
        discount: float | None = None,
    ) -> None:
        amount = amount if amount is not None else self.rng.uniform(20, 80)
        fields: dict[str, Any] = {
            "amount": f"{amount:.2f}",
            "currency": "USD",
            "channel": self.rng.choice(["web", "store", "app"]),
        }
        if discount is not None:
            fields["discount"] = discount
        self.add("purchase", at, **fields)
        self.last_purchase = at

    def steady(self, start: datetime, end: datetime, gap: float, noise: bool = True) -> None:
        at = start
        while at < end:
            self.purchase(at)
            if noise and self.rng.random() < 0.08:
                self.add(
                    "survey",
                    at + timedelta(hours=5),
                    satisfaction=self.rng.choice(
                        ["satisfied", "very_satisfied", "fairly_satisfied", "neutral"]
                    ),
                )
            if noise and self.rng.random() < 0.02:
                self.add(
                    "complaint",
                    at + timedelta(days=1),
                    complaint_id=f"{self.cid}-c{self.n}",
                    category=self.rng.choice(["product", "service", "price"]),
                    severity=1,
                    status="resolved",
                )
            if noise and self.rng.random() < 0.02:
                self.add(
                    "refund",
                    at + timedelta(days=3),
                    amount=f"{self.rng.uniform(5, 20):.2f}",
                    reason=self.rng.choice(["defective", "changed_mind", "other"]),
                )
            if noise and self.rng.random() < 0.02:
                self.add(
                    "survey",
                    at + timedelta(hours=6),
                    satisfaction=self.rng.choice(["fairly_dissatisfied", "dissatisfied"]),
                )
            if noise and self.rng.random() < 0.03:
                self.add(
                    "call",
                    at + timedelta(days=2),
                    direction="inbound",
                    reason=self.rng.choice(["billing", "other"]),
                    duration_s=self.rng.randint(60, 400),
                    wait_s=self.rng.randint(0, 120),
                    resolved=True,
                )
            at += timedelta(days=gap * self.rng.uniform(0.7, 1.3), hours=self.rng.uniform(0, 10))

    def evidence(self, kind: str, start: datetime, end: datetime) -> None:
        """The touchpoints of a relationship breaking for ``kind`` reasons, in [start, end)."""
        r = self.rng
        span = (end - start).total_seconds()

        def at() -> datetime:
            return start + timedelta(seconds=r.uniform(0, span))

        if kind == "price":
            for _ in range(r.randint(1, 2)):
                self.add(
                    "complaint",
                    at(),
                    complaint_id=f"{self.cid}-p{self.n}",
                    category="price",
                    severity=r.randint(2, 4),
                    status="resolved",
                )
            self.add(
                "call",
                at(),
                direction="inbound",
                reason="price",
                duration_s=r.randint(60, 600),
                wait_s=r.randint(0, 120),
                resolved=True,
            )
            if r.random() < 0.6:
                self.add("refund", at(), amount=f"{r.uniform(5, 30):.2f}", reason="price")
        elif kind == "product":
            for _ in range(r.randint(1, 2)):
                self.add(
                    "refund",
                    at(),
                    amount=f"{r.uniform(10, 60):.2f}",
                    reason=r.choice(["defective", "not_as_described"]),
                )
            self.add(
                "complaint",
                at(),
                complaint_id=f"{self.cid}-q{self.n}",
                category="product",
                severity=r.randint(2, 5),
                status=r.choice(["resolved", "resolved", "open"]),
            )
            if r.random() < 0.5:
                self.add(
                    "call",
                    at(),
                    direction="inbound",
                    reason="product",
                    duration_s=r.randint(60, 900),
                    wait_s=r.randint(0, 200),
                    resolved=True,
                )
        elif kind == "service":
            self.add(
                "complaint",
                at(),
                complaint_id=f"{self.cid}-s{self.n}",
                category="service",
                severity=r.randint(3, 5),
                status=r.choice(["open", "rejected"]),
            )
            for _ in range(r.randint(2, 3)):
                self.add(
                    "call",
                    at(),
                    direction="inbound",
                    reason=r.choice(["service", "service", "billing"]),
                    duration_s=r.randint(120, 1200),
                    wait_s=r.randint(300, 1500),
                    resolved=r.random() < 0.3,
                )
            if r.random() < 0.5:
                self.add(
                    "survey", at(), satisfaction=r.choice(["dissatisfied", "very_dissatisfied"])
                )
        elif kind == "self_change":
            self.add("account", at(), change=r.choice(["moved", "life_event"]))
            if r.random() < 0.3:
                self.add("account", at(), change="contact_changed")


def _customer(archetype: str, i: int, rng: random.Random) -> tuple[list[dict[str, Any]], Truth]:
    cid = f"sim-{archetype}-{i:05d}"
    g = _Gen(rng, cid)
    end = START + timedelta(days=DAYS)
    stage, defection, alerted = "stability", None, False
    if archetype == "loyal":
        g.steady(START + timedelta(days=rng.uniform(0, 20)), end, rng.uniform(7, 30))
    elif archetype == "grower":
        at = START + timedelta(days=rng.uniform(0, DAYS * 0.4))
        gap = rng.uniform(40, 50)
        while at < end:
            g.purchase(at, amount=rng.uniform(20, 40) * (50 / gap) ** 0.3)
            at += timedelta(days=gap * rng.uniform(0.85, 1.15))
            gap = max(12.0, gap * 0.85)
    elif archetype == "one_off":
        g.purchase(START + timedelta(days=rng.uniform(0, DAYS * 0.55)))
        stage, defection, alerted = "churned", "unknown", True
    elif archetype in DEFECTORS:
        gap = rng.uniform(7, 25)
        start = START + timedelta(days=rng.uniform(0, 30))
        stop = START + timedelta(days=rng.uniform(DAYS * 0.3, DAYS * 0.6))
        window = timedelta(days=rng.uniform(30, 70))
        g.steady(start, stop - window, gap, noise=False)
        # Keeps buying while the relationship breaks; price defectors buy on discount.
        at = stop - window
        while at < stop:
            g.purchase(at, discount=0.3 if archetype == "price" else None)
            at += timedelta(days=gap * rng.uniform(0.8, 1.2))
        g.evidence(archetype, stop - window, stop)
        if rng.random() < 0.35:  # real evidence is rarely pure: one mild contrary signal
            other = rng.choice([k for k in ("price", "product", "service") if k != archetype])
            g.add(
                "complaint",
                stop - window / 2,
                complaint_id=f"{cid}-x",
                category=other,
                severity=rng.randint(1, 2),
                status="resolved",
            )
        stage, defection, alerted = "churned", archetype, True
    elif archetype == "wobbler":
        gap = rng.uniform(7, 20)
        pause = START + timedelta(days=rng.uniform(DAYS * 0.45, DAYS * 0.7))
        g.steady(START + timedelta(days=rng.uniform(0, 20)), pause, gap)
        g.steady(pause + timedelta(days=gap * rng.uniform(4.2, 5.0)), end, gap)
        alerted = True
    else:
        raise ValueError(f"unknown archetype {archetype}")
    assert g.last_purchase is not None
    truth = Truth(
        cid,
        archetype,
        stage,
        defection,
        alerted,
        g.last_purchase.isoformat().replace("+00:00", "Z"),
    )
    return g.events, truth


def simulate(
    customers: int = 2000,
    seed: int = 1,
    mix: dict[str, float] | None = None,
) -> tuple[list[dict[str, Any]], list[Truth]]:
    """Events in event-time order, and the truth per customer."""
    rng = random.Random(seed)
    mix = mix or MIX
    events: list[dict[str, Any]] = []
    truths: list[Truth] = []
    names = list(mix)
    counts = {a: round(customers * mix[a]) for a in names}
    for archetype in names:
        for i in range(counts[archetype]):
            evs, truth = _customer(archetype, i, rng)
            events.extend(evs)
            truths.append(truth)
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    return events, truths


def disorder(
    events: list[dict[str, Any]], shuffle_s: float = 0.0, duplicate_rate: float = 0.0, seed: int = 2
) -> Iterator[dict[str, Any]]:
    """Arrival order for a stream: each event arrives up to ``shuffle_s`` late (so
    events are out of order within that much time), and a share is sent twice."""
    rng = random.Random(seed)
    keyed = []
    for e in events:
        at = e["occurred_at"] if "occurred_at" in e else e["time"]  # plain or CloudEvents
        t = datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()
        keyed.append((t + rng.uniform(0, shuffle_s), e))
        if rng.random() < duplicate_rate:
            keyed.append((t + rng.uniform(0, shuffle_s) + rng.uniform(0, 60), e))
    keyed.sort(key=lambda x: x[0])
    for _, e in keyed:
        yield e


def truth_json(t: Truth) -> dict[str, Any]:
    return asdict(t)
