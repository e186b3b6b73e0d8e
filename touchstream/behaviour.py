"""A touchpoint stream written from the customer's side, with its ground truth.

`touchstream simulate --kind behaviour`. touchstream/simulate.py plants each archetype's
evidence the way the rules read it; this stream instead models how customers behave
(the CRM literature digest: RFM behaviour, the four defection types, complaint handling)
and lets the rules find what they can. Customer ids, event ids and sources carry no hint
of the archetype.

The period is two years from 2024-01-01; the stream ends at ``END``. Archetypes, with
their default shares of the population (``MIX``):

- loyal (26%): stays the whole period. Gaps between purchases are gamma distributed
  around a personal mean of 7-40 days with a coefficient of variation of 0.3-0.5, plus
  the occasional holiday (one to three weeks more). A share has handled trouble: a
  complaint resolved within hours or days (some only after one to three weeks, a few
  reopened first), resolved calls, a problem that took two or three calls to resolve, a
  refund of a defective item followed by more purchases, a neutral or mildly negative
  survey, the odd long wait on the phone; a few change their contact details.
  Truth: stability, never alarmed.
- irregular (10%): stays, buying in bursts (two to five purchases close together, then a
  pause of up to about three mean gaps): a coefficient of variation of 0.5-0.8.
  Truth: active (any of exploration, formation, stability), never alarmed.
- discount_loyal (7%): buys on discount (0.15-0.5) nearly every time, from the first
  purchase to the end. Truth: stability, never alarmed.
- seasonal (5%): buys only in its season (around the year-end holidays, or in winter
  from December to February), silent in between; the period ends inside the season.
  Truth: active, never alarmed; reported apart from the stayers.
- new (5%): first purchase in the last two months, one or two more after it.
  Truth: active, never alarmed.
- one_off (10%): one purchase in the first 40% of the period, nothing after.
  Truth: churned, defection unknown.
- silent_leaver (8%): an established relationship that simply stops between 30% and
  65% of the period; nothing but purchases in its last six months (old, handled trouble
  before that at most). Truth: churned, defection unknown.
- price, product, service, self_change (6% each): an established relationship with the
  loyal rhythm, then in the last one to three months before the last purchase ONLY TWO
  of the type's signals (``SIGNALS``, chosen at random) plus unrelated noise (a resolved
  billing call, a neutral or satisfied survey, an outbound call), then no more purchases
  (the last one between 30% and 65% of the period). Truth: churned with that type.
- wobbler (5%): loyal, then one silence of 4-6 typical gaps in the second half, then
  back for good. Truth: active at the end; a decline alert followed by recovered is fine.

About a quarter of the events are CloudEvents 1.0 structured JSON (``subject`` is the
customer); the others are plain contract events. Shops' tills, the call centre, the
helpdesk and the CRM write local times with their offset (+02:00, -05:00, +05:30...),
the web shop and payments write UTC with ``Z``, the app adds milliseconds, the survey
tool writes ``+00:00``. Use ``customer_of`` and ``instant_of`` to read either shape.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from touchstream.simulate import DEFECTORS, Truth

START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 730
END = START + timedelta(days=DAYS)

MIX = {
    "loyal": 0.26,
    "irregular": 0.10,
    "discount_loyal": 0.07,
    "seasonal": 0.05,
    "new": 0.05,
    "one_off": 0.10,
    "silent_leaver": 0.08,
    "price": 0.06,
    "product": 0.06,
    "service": 0.06,
    "self_change": 0.06,
    "wobbler": 0.05,
}
STAYERS = ("loyal", "irregular", "discount_loyal")
ACTIVE = "active"  # truth stage: any of exploration, formation, stability

# What a customer of each defection type does, as the customer would describe it.
SIGNALS: dict[str, tuple[str, ...]] = {
    "price": (
        "discount_switch",
        "price_complaint",
        "price_call",
        "price_refund",
        "dissatisfied_survey",
    ),
    "product": ("defect_refund", "product_complaint", "product_call", "very_dissatisfied_survey"),
    "service": ("long_waits", "unresolved_calls", "service_complaint_unresolved", "repeated_calls"),
    "self_change": ("relocation", "contact_changed", "closed"),
}
# self_change: a closed account is the rarer signal (only some close it).
_SELF_CHANGE_PAIRS = (
    (("relocation", "contact_changed"), 0.6),
    (("relocation", "closed"), 0.25),
    (("contact_changed", "closed"), 0.15),
)

CLOUDEVENTS_SHARE = 0.25
TROUBLE_SHARE = 0.4  # stayers (and the relationship before a leaver stops) with handled trouble
CONTACT_CHANGE_SHARE = 0.03  # stayers who change their contact details once

# Home time zones (offset in minutes, weight) and each region's currency.
_ZONES = (
    (60, 0.3),
    (120, 0.2),
    (-300, 0.12),
    (-240, 0.08),
    (330, 0.1),
    (0, 0.08),
    (480, 0.05),
    (-180, 0.04),
    (600, 0.03),
)
_CURRENCY = {
    60: "EUR",
    120: "EUR",
    0: "GBP",
    -300: "USD",
    -240: "USD",
    330: "INR",
    480: "SGD",
    -180: "BRL",
    600: "AUD",
}
_PER_EUR = {"INR": 90.0, "BRL": 6.0, "SGD": 1.5, "AUD": 1.6}  # basket sizes in local money
_CATEGORIES = (
    "books",
    "electronics",
    "home",
    "garden",
    "toys",
    "clothing",
    "grocery",
    "beauty",
    "sports",
    "music",
)
# How each sending system writes occurred_at: "utc" (Z), "ms" (Z with milliseconds),
# "local" (the customer's offset), "zero" (+00:00).
_SOURCES = {
    "webshop": "utc",
    "mobile-app": "ms",
    "store-pos": "local",
    "callcenter": "local",
    "helpdesk": "local",
    "payments": "utc",
    "survey-tool": "zero",
    "crm": "local",
}
_CHANNEL_SOURCE = {"web": "webshop", "app": "mobile-app", "store": "store-pos"}


def customer_of(e: dict[str, Any]) -> str:
    """The customer of a plain or CloudEvents event (the message key)."""
    return str(e["customer_id"] if "customer_id" in e else e["subject"])


def instant_of(e: dict[str, Any]) -> datetime:
    """When a plain or CloudEvents event happened, as an aware datetime."""
    return datetime.fromisoformat(e["occurred_at"] if "occurred_at" in e else e["time"])


def plain(e: dict[str, Any]) -> dict[str, Any]:
    """A CloudEvents event as the plain contract event it maps to (docs/events.md)."""
    if "specversion" not in e:
        return e
    return {
        **e.get("data", {}),
        "event_id": e["id"],
        "customer_id": e["subject"],
        "type": e["type"].removeprefix("com.touchstream."),
        "occurred_at": e["time"],
        "source": e["source"],
    }


def _gamma(rng: random.Random, mean: float, cv: float) -> float:
    k = 1 / (cv * cv)
    return rng.gammavariate(k, mean / k)


@dataclass
class _Ev:
    at: datetime
    kind: str
    source: str
    fields: dict[str, Any]


@dataclass
class _Ids:
    """Stream-wide counters, so every id is unique."""

    counts: dict[str, int] = field(default_factory=dict)

    def next(self, prefix: str) -> str:
        n = self.counts.get(prefix, 0) + 1
        self.counts[prefix] = n
        return f"{prefix}-{n:07d}"


class _Life:
    """One customer's touchpoints, as they happen."""

    def __init__(self, rng: random.Random, cid: str, ids: _Ids) -> None:
        self.rng, self.cid, self.ids = rng, cid, ids
        self.offset = rng.choices([z for z, _ in _ZONES], [w for _, w in _ZONES])[0]
        self.currency = _CURRENCY[self.offset]
        self.basket = math.exp(rng.uniform(math.log(15), math.log(150))) * _PER_EUR.get(
            self.currency, 1.0
        )
        self.categories = rng.sample(_CATEGORIES, rng.randint(1, 3))
        self.channels = rng.choice(
            (
                ("web", "app"),
                ("store",),
                ("web", "store"),
                ("app",),
                ("web",),
                ("web", "app", "store"),
            )
        )
        self.evs: list[_Ev] = []
        self.orders: list[tuple[datetime, str, float]] = []

    # -- touchpoints --------------------------------------------------------------

    def _emit(self, kind: str, at: datetime, source: str, **fields: Any) -> None:
        self.evs.append(_Ev(at.replace(microsecond=0), kind, source, fields))

    def _daytime(self, at: datetime) -> datetime:
        """``at`` moved to between 8:00 and 21:00 of the customer's local day."""
        local = at + timedelta(minutes=self.offset)
        day = local.replace(hour=0, minute=0, second=0, microsecond=0)
        at = day + timedelta(hours=self.rng.uniform(8, 21)) - timedelta(minutes=self.offset)
        return at if at >= START else at + timedelta(days=1)  # the period's first day

    def buy(self, at: datetime, discount: float | None = None) -> datetime:
        r = self.rng
        at = at.replace(microsecond=0)
        channel = r.choice(self.channels)
        list_price = self.basket * math.exp(r.gauss(0, 0.35))
        amount = round(list_price * (1 - (discount or 0)), 2)
        order = self.ids.next("ord")
        fields: dict[str, Any] = {
            # tills send numbers, the web shop and the app strings
            "amount": amount if channel == "store" else f"{amount:.2f}",
            "currency": self.currency,
            "order_id": order,
            "channel": channel,
            "category": r.choice(self.categories),
        }
        if discount is not None:
            fields["discount"] = discount
        self._emit("purchase", at, _CHANNEL_SOURCE[channel], **fields)
        self.orders.append((at, order, amount))
        return at

    def call(
        self,
        at: datetime,
        reason: str,
        resolved: bool,
        wait: float | None = None,
        direction: str = "inbound",
        duration: float | None = None,
    ) -> None:
        r = self.rng
        fields: dict[str, Any] = {
            "direction": direction,
            "reason": reason,
            "resolved": resolved,
            "duration_s": round(duration if duration is not None else r.uniform(60, 720)),
        }
        if direction == "inbound":
            fields["wait_s"] = round(wait if wait is not None else min(r.expovariate(1 / 45), 240))
        self._emit("call", at, "callcenter", **fields)

    def complaint(
        self,
        at: datetime,
        category: str,
        severity: int,
        outcome: str,
        after: timedelta,
        reopen: timedelta | None = None,
    ) -> None:
        """Opened at ``at``; ``outcome`` (resolved / rejected) ``after`` later, or left
        open. A reopened complaint is sent as open again ``reopen`` after that, then
        resolved."""
        cid = self.ids.next("CMP")
        base = {"complaint_id": cid, "category": category, "severity": severity}
        self._emit("complaint", at, "helpdesk", **base, status="open")
        if outcome == "open":
            return
        done = at + after
        self._emit("complaint", done, "helpdesk", **base, status=outcome)
        if reopen is not None:
            again = done + reopen
            self._emit("complaint", again, "helpdesk", **base, status="open")
            self._emit(
                "complaint",
                again + timedelta(hours=self.rng.uniform(3, 96)),
                "helpdesk",
                **base,
                status="resolved",
            )

    def refund(self, at: datetime, reason: str, share: float = 1.0) -> None:
        """A refund of the latest order before ``at`` (``share`` of its amount)."""
        before = [o for o in self.orders if o[0] < at]
        if not before:
            return
        _, order, amount = before[-1]
        self._emit(
            "refund", at, "payments", amount=f"{amount * share:.2f}", order_id=order, reason=reason
        )

    def survey(self, at: datetime, satisfaction: str) -> None:
        self._emit("survey", at, "survey-tool", satisfaction=satisfaction)

    def account(self, at: datetime, change: str) -> None:
        self._emit("account", at, "crm", change=change)

    # -- patterns -----------------------------------------------------------------

    def after_purchase(self, at: datetime) -> None:
        """Everyday touchpoints around an order, nothing to do with leaving."""
        r = self.rng
        if r.random() < 0.08:
            self.survey(
                at + timedelta(hours=r.uniform(2, 72)),
                r.choice(("very_satisfied", "satisfied", "satisfied", "fairly_satisfied")),
            )
        if r.random() < 0.015:
            self.call(
                at + timedelta(days=r.uniform(1, 20)),
                "other",
                True,
                direction="outbound",
                duration=r.uniform(30, 300),
            )
        if r.random() < 0.015:
            self.refund(at + timedelta(days=r.uniform(1, 14)), "changed_mind")

    def plan(
        self, start: datetime, stop: datetime, mean: float, cv: float, holidays: bool = False
    ) -> list[datetime]:
        """Purchase times from ``start`` while before ``stop``: gamma gaps around ``mean``
        days, each at a daytime hour; with ``holidays``, about one a year is one to three
        weeks longer."""
        r = self.rng
        times = []
        at = start
        while at < stop:
            times.append(self._daytime(at))
            gap = _gamma(r, mean, cv)
            if holidays and r.random() < mean / 365:
                gap += r.uniform(7, 21)
            at = at + timedelta(days=gap)
        return times

    def rhythm(
        self,
        start: datetime,
        stop: datetime,
        mean: float,
        cv: float,
        holidays: bool = False,
        discount: Callable[[], float | None] | None = None,
        noise: bool = True,
    ) -> list[datetime]:
        """Purchases on the ``plan``, each with everyday touchpoints if ``noise``."""
        times = self.plan(start, stop, mean, cv, holidays)
        self.buy_all(times, discount, noise)
        return times

    def buy_all(
        self,
        times: list[datetime],
        discount: Callable[[], float | None] | None = None,
        noise: bool = True,
    ) -> None:
        for t in times:
            self.buy(t, discount() if discount else None)
            if noise:
                self.after_purchase(t)

    def bursts(self, start: datetime, stop: datetime, mean: float) -> list[datetime]:
        """Two to five purchases close together, then a pause of 1.4-2.8 ``mean``."""
        r = self.rng
        times = []
        at = start
        while at < stop:
            n = r.randint(2, 5)
            for i in range(n):
                if at >= stop:
                    break
                t = self.buy(self._daytime(at), self.sale())
                times.append(t)
                self.after_purchase(t)
                gap = mean * r.uniform(1.4, 2.8) if i == n - 1 else _gamma(r, 0.65 * mean, 0.35)
                at = at + timedelta(days=gap)
        return times

    def sale(self) -> float | None:
        """Loyal customers catch a sale now and then."""
        r = self.rng
        return r.choice((0.1, 0.15, 0.2, 0.25)) if r.random() < 0.1 else None

    def trouble(self, lo: datetime, hi: datetime) -> None:
        """One to three episodes of trouble, each handled, within [lo, hi)."""
        r = self.rng
        span = (hi - lo).total_seconds()
        if span <= 0:
            return
        for _ in range(r.choice((1, 1, 1, 2, 2, 3))):
            at = lo + timedelta(seconds=r.uniform(0, span))
            kind = r.choice(
                ("complaint", "complaint", "call", "repeat", "defect", "survey", "wait")
            )
            if kind == "complaint":
                slow = r.random() < 0.2
                after = (
                    timedelta(days=r.uniform(7, 21)) if slow else timedelta(hours=r.uniform(2, 96))
                )
                reopen = timedelta(days=r.uniform(1, 10)) if r.random() < 0.1 else None
                self.complaint(
                    at,
                    r.choice(("product", "service", "price", "other")),
                    r.randint(1, 3),
                    "resolved",
                    after,
                    reopen,
                )
            elif kind == "call":
                self.call(at, r.choice(("billing", "product", "service", "price", "other")), True)
            elif kind == "repeat":  # one problem, two or three calls, then solved
                reason = r.choice(("billing", "product", "service", "other"))
                n = r.randint(2, 3)
                for i in range(n):
                    self.call(at, reason, resolved=i == n - 1)
                    at = at + timedelta(days=r.uniform(1, 7))
            elif kind == "defect":  # a defective item refunded; buying goes on
                self.refund(at, r.choice(("defective", "not_as_described")))
            elif kind == "survey":
                self.survey(at, r.choice(("neutral", "neutral", "fairly_dissatisfied")))
            else:  # a bad day at the call centre, the question still answered
                self.call(
                    at, r.choice(("billing", "other", "service")), True, wait=r.uniform(300, 900)
                )

    def noise(self, lo: datetime, hi: datetime) -> None:
        """One or two touchpoints unrelated to leaving, within [lo, hi)."""
        r = self.rng
        span = (hi - lo).total_seconds()
        for _ in range(r.randint(1, 2)):
            at = lo + timedelta(seconds=r.uniform(0, span))
            kind = r.choice(("billing", "neutral", "satisfied", "outbound"))
            if kind == "billing":
                self.call(at, "billing", True, wait=r.uniform(0, 120))
            elif kind == "outbound":
                self.call(at, "other", True, direction="outbound", duration=r.uniform(30, 300))
            else:
                self.survey(at, kind)

    def signal(self, name: str, lo: datetime, hi: datetime, repeat_reason: str) -> None:
        """One defection signal within [lo, hi) (discount_switch is in the purchases; a
        closure comes after ``hi``). Repeated calls are about ``repeat_reason``, other
        unresolved calls about something else."""
        r = self.rng
        span = (hi - lo).total_seconds()

        def at() -> datetime:
            return lo + timedelta(seconds=r.uniform(0.05, 0.95) * span)

        short_wait = r.uniform(0, 150)
        if name == "price_complaint":
            outcome = r.choice(("resolved", "open", "rejected"))
            self.complaint(
                at(), "price", r.randint(2, 4), outcome, timedelta(days=r.uniform(1, 10))
            )
        elif name == "price_call":
            self.call(at(), "price", True, wait=short_wait)
        elif name == "price_refund":  # a price match
            self.refund(at(), "price", share=r.uniform(0.05, 0.2))
        elif name == "dissatisfied_survey":
            self.survey(at(), "dissatisfied")
        elif name == "defect_refund":
            for _ in range(r.randint(1, 2)):
                self.refund(at(), r.choice(("defective", "not_as_described")))
        elif name == "product_complaint":
            outcome = r.choice(("resolved", "open", "rejected"))
            self.complaint(
                at(), "product", r.randint(2, 5), outcome, timedelta(days=r.uniform(2, 20))
            )
        elif name == "product_call":
            self.call(at(), "product", True, wait=short_wait)
        elif name == "very_dissatisfied_survey":
            self.survey(at(), "very_dissatisfied")
        elif name == "long_waits":
            for reason in r.sample(("service", "billing", "other"), r.randint(2, 3)):
                self.call(
                    at(), reason, True, wait=r.uniform(300, 1800), duration=r.uniform(120, 900)
                )
        elif name == "unresolved_calls":
            reasons = [x for x in ("service", "billing", "product", "other") if x != repeat_reason]
            for reason in r.sample(reasons, r.randint(1, 2)):
                self.call(at(), reason, False, wait=r.uniform(0, 150))
        elif name == "service_complaint_unresolved":
            self.complaint(
                at(),
                "service",
                r.randint(3, 5),
                r.choice(("open", "rejected")),
                timedelta(days=r.uniform(2, 14)),
            )
        elif name == "repeated_calls":
            t = at()
            for _ in range(r.randint(2, 3)):
                self.call(t, repeat_reason, False, wait=r.uniform(0, 150))
                t = t + timedelta(days=r.uniform(2, 8))
        elif name == "relocation":
            self.account(at(), r.choice(("moved", "life_event")))
        elif name == "contact_changed":
            self.account(at(), "contact_changed")
        elif name == "closed":
            self.account(hi + timedelta(days=r.uniform(0.5, 10)), "closed")
        else:
            raise ValueError(f"unknown signal {name}")


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def _days(d: float) -> timedelta:
    return timedelta(days=d)


def _customer(
    archetype: str,
    cid: str,
    rng: random.Random,
    ids: _Ids,
) -> tuple[_Life, Truth]:
    life = _Life(rng, cid, ids)
    r = rng
    stage, defection, alerted = ACTIVE, None, False
    signals: tuple[str, ...] = ()
    if archetype in ("loyal", "discount_loyal"):
        stage = "stability"
        discount = (
            (lambda: round(r.uniform(0.15, 0.5), 2) if r.random() < 0.95 else None)
            if archetype == "discount_loyal"
            else life.sale
        )
        life.rhythm(
            START + _days(r.uniform(0, 30)),
            END,
            r.uniform(7, 40),
            r.uniform(0.3, 0.5),
            holidays=r.random() < 0.6,
            discount=discount,
        )
    elif archetype == "irregular":
        life.bursts(START + _days(r.uniform(0, 30)), END, r.uniform(10, 35) / 1.07)
    elif archetype == "wobbler":
        gap = r.uniform(7, 25)
        silence = gap * r.uniform(4, 6)
        pause = START + _days(r.uniform(DAYS * 0.5, DAYS * 0.75))
        pause = min(pause, END - _days(silence + 90))
        cv = r.uniform(0.3, 0.5)
        times = life.plan(START + _days(r.uniform(0, 30)), END, gap, cv)
        before = [t for t in times if t < pause]
        before.append(times[len(before)])  # the silence starts on or after ``pause``
        life.buy_all(before, life.sale)
        life.rhythm(before[-1] + _days(silence), END, gap, cv, discount=life.sale)
    elif archetype == "seasonal":
        _seasonal(life)
    elif archetype == "new":  # the later purchases spread up to the last two weeks
        first = END - _days(r.uniform(25, 60))
        latest = END - _days(r.uniform(1, 14))
        middle = [first + (latest - first) * r.uniform(0.3, 0.7)] if r.random() < 0.5 else []
        for at in (first, *middle, latest):
            life.buy(life._daytime(at))
    elif archetype == "one_off":
        life.buy(life._daytime(START + _days(r.uniform(0, DAYS * 0.4))))
        stage, defection, alerted = "churned", "unknown", True
    elif archetype == "silent_leaver":
        _silent_leaver(life)
        stage, defection, alerted = "churned", "unknown", True
    elif archetype in DEFECTORS:
        signals = _defector(life, archetype)
        stage, defection, alerted = "churned", archetype, True
    else:
        raise ValueError(f"unknown archetype {archetype}")
    if archetype in (*STAYERS, "wobbler"):
        first, last = life.orders[0][0], life.orders[-1][0]
        if r.random() < TROUBLE_SHARE:  # handled, and done before the end
            life.trouble(first + _days(3), min(last, END - _days(40)))
        if r.random() < CONTACT_CHANGE_SHARE:
            life.account(first + (last - first) * r.uniform(0.1, 0.9), "contact_changed")
    life.evs = [e for e in life.evs if e.at < END]
    truth = Truth(
        cid,
        archetype,
        stage,
        defection,
        alerted,
        _iso(life.orders[-1][0]),
        signals=signals,
        stream="behaviour",
    )
    return life, truth


def _seasonal(life: _Life) -> None:
    """Year-end holiday shoppers, or winter buyers (December to February)."""
    r = life.rng
    if r.random() < 0.6:  # from some day in Oct 25 - Nov 25 to the end of the year
        seasons = [
            (
                datetime(y, 10, 25, tzinfo=UTC) + _days(r.uniform(0, 31)),
                datetime(y, 12, 31, tzinfo=UTC),
            )
            for y in (2024, 2025)
        ]
    else:
        seasons = [
            (START, datetime(2024, 3, 1, tzinfo=UTC)),
            (datetime(2024, 12, 1, tzinfo=UTC), datetime(2025, 3, 1, tzinfo=UTC)),
            (datetime(2025, 12, 1, tzinfo=UTC), END),
        ]
    gap = r.uniform(5, 14)
    for lo, hi in seasons:
        # (a day's margin: a purchase moves to a daytime hour of the customer's day)
        life.rhythm(
            lo + _days(r.uniform(0, gap)), min(hi - _days(1), END), gap, r.uniform(0.3, 0.5)
        )
    if life.orders[-1][0] < END - _days(20):  # in season at the end: a recent purchase
        life.buy(life._daytime(END - _days(r.uniform(3, 18))))


def _until_they_stop(life: _Life) -> tuple[datetime, float, list[datetime]]:
    """Start, mean gap and purchase times of a relationship whose last purchase falls
    between 30% and 65% of the period, after at least eight mean gaps."""
    r = life.rng
    start = START + _days(r.uniform(0, 60))
    lo, hi = START + _days(DAYS * 0.3), START + _days(DAYS * 0.65)
    stop = lo + (hi - lo) * r.random()
    gap = r.uniform(7, min(40, (stop - start).days / 8))
    times = life.plan(start, END, gap, r.uniform(0.3, 0.5))
    kept = [t for t in times if t <= stop]
    if kept[-1] < lo:  # the next purchase, after lo and (a gap later) well before hi
        kept.append(times[len(kept)])
    return start, gap, kept


def _silent_leaver(life: _Life) -> None:
    """Buys for a while, then stops; nothing but purchases in the last six months."""
    r = life.rng
    start, _gap, times = _until_they_stop(life)
    for t in times:
        life.buy(t, life.sale())
    calm = times[-1] - _days(190)
    # everyday touchpoints end within 20 days, trouble's follow-ups within 35
    for t in times:
        if t < calm - _days(20):
            life.after_purchase(t)
    if r.random() < TROUBLE_SHARE and calm - start > _days(60):
        life.trouble(start + _days(10), calm - _days(40))


def _defector(life: _Life, kind: str) -> tuple[str, ...]:
    """An established relationship, two of the type's signals in its last one to three
    months, then no more purchases. Returns the signals."""
    r = life.rng
    if kind == "self_change":
        pairs = [p for p, _ in _SELF_CHANGE_PAIRS]
        chosen = r.choices(pairs, [w for _, w in _SELF_CHANGE_PAIRS])[0]
    else:
        first, second = r.sample(SIGNALS[kind], 2)
        chosen = (first, second)
    start, gap, times = _until_they_stop(life)
    last = times[-1]
    window = _days(r.uniform(max(30, 2.2 * gap), 90))
    ws = last - window
    if sum(t >= ws for t in times) < 2:  # at least two purchases in the window
        times.insert(-1, life._daytime(ws + window * r.uniform(0.2, 0.7)))
    switch = "discount_switch" in chosen
    for t in times:
        if t >= ws:  # full price, or on discount after a switch to discounts
            life.buy(t, round(r.uniform(0.2, 0.5), 2) if switch else None)
        else:
            life.buy(t, None if switch else life.sale())
            if t < ws - _days(120):  # everyday touchpoints end within 20 days
                life.after_purchase(t)
    if r.random() < TROUBLE_SHARE and ws - start > _days(150):  # old, handled trouble
        life.trouble(start + _days(10), ws - _days(130))
    repeat_reason = r.choice(("service", "billing"))
    for name in chosen:  # before the last purchase (a closure comes after it)
        if name != "discount_switch":
            life.signal(name, ws, last, repeat_reason)
    life.noise(ws, last)
    return chosen


def _render(
    ev: _Ev, offset: int, cid: str, event_id: str, rng: random.Random, cloudevent: bool
) -> dict[str, Any]:
    style = _SOURCES[ev.source]
    if style == "local":
        stamp = ev.at.astimezone(timezone(timedelta(minutes=offset))).isoformat()
    elif style == "zero":
        stamp = ev.at.isoformat()
    elif style == "ms":
        stamp = f"{_iso(ev.at)[:-1]}.{rng.randrange(1000):03d}Z"
    else:
        stamp = _iso(ev.at)
    if cloudevent:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": ev.source,
            "type": f"com.touchstream.{ev.kind}",
            "subject": cid,
            "time": stamp,
            "datacontenttype": "application/json",
            "data": dict(ev.fields),
        }
    return {
        "event_id": event_id,
        "customer_id": cid,
        "type": ev.kind,
        "occurred_at": stamp,
        "source": ev.source,
        **ev.fields,
    }


def simulate_behaviour(
    customers: int = 2000,
    seed: int = 1,
    mix: dict[str, float] | None = None,
    cloudevents_share: float = CLOUDEVENTS_SHARE,
) -> tuple[list[dict[str, Any]], list[Truth]]:
    """The events of about ``customers`` customers (``mix`` shares, rounded) in event-time
    order, and the truth per customer. Deterministic for a seed."""
    rng = random.Random(seed)
    mix = mix or MIX
    archetypes = [a for a in mix for _ in range(round(customers * mix[a]))]
    rng.shuffle(archetypes)
    numbers = rng.sample(range(100_000, 1_000_000), len(archetypes))
    ids = _Ids()
    rows: list[tuple[datetime, str, dict[str, Any]]] = []
    truths: list[Truth] = []
    for archetype, number in zip(archetypes, numbers, strict=True):
        cid = f"C{number}"
        life, truth = _customer(archetype, cid, rng, ids)
        truths.append(truth)
        for ev in sorted(life.evs, key=lambda e: e.at):
            ce = rng.random() < cloudevents_share
            event_id = (
                str(uuid.UUID(int=rng.getrandbits(128), version=4)) if ce else ids.next(ev.kind[:3])
            )
            e = _render(ev, life.offset, cid, event_id, rng, ce)
            rows.append((instant_of(e), event_id, e))
    rows.sort(key=lambda x: (x[0], x[1]))
    truths.sort(key=lambda t: t.customer_id)
    return [e for _, _, e in rows], truths
