"""`touchstream evaluate`: score the pipeline's decisions against planted ground truth.

The decisions come either from ClickHouse after a real run (customer_state, alerts), or
from the same batch pipeline run in process over an events file (agents.processor with
Kafka's partitioning; no broker), which is what the quick checks use.

Two streams have truth: touchstream/simulate.py (written from the rules; its targets are
``Report.meets_targets`` with ``stream == "rules"``) and touchstream/behaviour.py (written
from the customer's side; ``stream == "behaviour"``, harder targets, see ``Report.checks``).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from agents.processor import Processor
from agents.records import RawMessage, Stored, key_partition
from schemas.events import epoch_ms
from touchstream.behaviour import customer_of, instant_of, plain
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules
from touchstream.domain.messages import CLOCK_KEY, clock_value
from touchstream.simulate import DEFECTORS, Truth

ALARMS = ("churn_risk", "decline", "churned")
ACTIVE_STAGES = ("exploration", "formation", "stability")  # what truth stage "active" accepts
STAYERS = ("loyal", "irregular", "discount_loyal")  # behaviour stream: the stay target
REPORTED = ("seasonal", "new", "wobbler")  # behaviour stream: alarms reported, not targeted


@dataclass(frozen=True)
class Decisions:
    states: dict[str, tuple[str, str]]  # customer -> (stage, defection_type)
    alerts: list[tuple[str, str, int]]  # (customer, kind, at_ms)
    # each alert's evidence, in the order of ``alerts``; None when not recorded
    evidence: list[tuple[str, ...]] | None = None


def decisions_diff(a: Decisions, b: Decisions) -> dict[str, Any]:
    """Where two runs decided differently: final (stage, type) per customer, and the
    (customer, kind) pairs of alerts only one of them raised."""
    states = {
        c: (a.states.get(c), b.states.get(c))
        for c in sorted(set(a.states) | set(b.states))
        if a.states.get(c) != b.states.get(c)
    }
    ka = {(c, k) for c, k, _ in a.alerts}
    kb = {(c, k) for c, k, _ in b.alerts}
    return {
        "states": states,
        "alerts_only_in_a": sorted(ka - kb),
        "alerts_only_in_b": sorted(kb - ka),
    }


def decisions_equal(a: Decisions, b: Decisions) -> bool:
    """Same final stages and defection types, and the same set of (customer, kind) alerts."""
    return not any(decisions_diff(a, b).values())


@dataclass
class Report:
    customers: int
    stage_accuracy: float
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    loyal_customers: int = 0
    loyal_alerted: int = 0
    wobblers_recovered: float = 0.0
    days_to_decline_alert: dict[str, float] = field(default_factory=dict)
    stage_confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    stream: str = "rules"  # which simulator's truth: rules or behaviour
    # archetype -> (customers alarmed: any churn_risk, decline or churned alert; customers)
    alarmed: dict[str, tuple[int, int]] = field(default_factory=dict)
    stage_by_archetype: dict[str, float] = field(default_factory=dict)  # share stage right
    churned_precision: float = 0.0
    churned_recall: float = 0.0
    silent_unknown: float = 0.0  # silent leavers decided decline/churned with type unknown
    one_off_unknown: float = 0.0  # the same for one-off buyers
    wobblers_unrecovered: float = 0.0  # alarmed wobblers without a later recovered
    churn_risk_alerts: int = 0
    churn_risk_without_evidence: int | None = None  # None: the decisions carry no evidence
    # churn_risk alerts raised when the events show nothing open (reported, not a target);
    # None: scored without the events
    churn_risk_nothing_open: int | None = None

    @property
    def loyal_false_alert_rate(self) -> float:
        return self.loyal_alerted / self.loyal_customers if self.loyal_customers else 0.0

    @property
    def stayers(self) -> int:
        return sum(self.alarmed.get(a, (0, 0))[1] for a in STAYERS)

    @property
    def stayers_alarmed(self) -> int:
        return sum(self.alarmed.get(a, (0, 0))[0] for a in STAYERS)

    @property
    def stayers_alarmed_rate(self) -> float:
        return self.stayers_alarmed / self.stayers if self.stayers else 0.0

    def checks(self) -> list[tuple[str, str, bool]]:
        """Each target of this report's stream: (what, the figure against its target, met)."""
        out = []
        for kind, m in self.per_type.items():
            for measure in ("precision", "recall"):
                v = m[measure]
                out.append((f"{kind} {measure}", f"{v:.3f} >= 0.9", v >= 0.9))
        if self.stream != "behaviour":
            v = self.loyal_false_alert_rate
            out.append(("loyal alerted", f"{v:.2%} < 2%", v < 0.02))
            return out
        v = self.stayers_alarmed_rate
        out.append(("stayers alarmed", f"{v:.2%} < 3%", v < 0.03))
        out.append(
            (
                "silent leavers typed unknown",
                f"{self.silent_unknown:.3f} >= 0.95",
                self.silent_unknown >= 0.95,
            )
        )
        out.append(
            ("final stage right", f"{self.stage_accuracy:.3f} >= 0.98", self.stage_accuracy >= 0.98)
        )
        out.append(
            (
                "churned precision",
                f"{self.churned_precision:.3f} >= 0.95",
                self.churned_precision >= 0.95,
            )
        )
        out.append(
            ("churned recall", f"{self.churned_recall:.3f} >= 0.95", self.churned_recall >= 0.95)
        )
        n = self.churn_risk_without_evidence
        out.append(
            (
                "churn_risk alerts without evidence",
                f"{'not recorded' if n is None else n} = 0",
                n == 0,
            )
        )
        return out

    def meets_targets(self) -> bool:
        """Rules stream: every type >= 0.9 precision and recall; < 2% loyal alerted.
        Behaviour stream: the same per type; < 3% of stayers (loyal, irregular,
        discount loyal) alarmed; >= 95% of silent leavers typed unknown; >= 98% final
        stages right; churned precision and recall >= 0.95; no churn_risk alert without
        evidence."""
        return all(met for _, _, met in self.checks())


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def stage_right(truth: str, decided: str) -> bool:
    """Truth stage "active" accepts any of exploration, formation and stability."""
    return decided in ACTIVE_STAGES if truth == "active" else decided == truth


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def open_issues(
    events: Iterable[dict[str, Any]], customer: str, at_ms: int, within_days: float = 30
) -> list[str]:
    """What the customer has open at ``at_ms`` by the events alone: complaints whose latest
    status is open, and unresolved calls of the last ``within_days`` not followed by a
    resolved call about the same reason. Plain or CloudEvents events, any order."""
    mine = sorted(
        (
            (int(instant_of(e).timestamp() * 1000), plain(e))
            for e in events
            if customer_of(e) == customer
        ),
        key=lambda x: x[0],
    )
    complaints: dict[str, str] = {}
    pending: dict[str, int] = {}  # call reason -> time of the oldest unresolved call
    for t, e in mine:
        if t > at_ms:
            break
        if e["type"] == "complaint":
            complaints[e["complaint_id"]] = e["status"]
        elif e["type"] == "call":
            if e["resolved"]:
                pending.pop(e["reason"], None)
            else:
                pending.setdefault(e["reason"], t)
    since = at_ms - within_days * 86_400_000
    return [f"complaint {c} open" for c, status in complaints.items() if status == "open"] + [
        f"call about {r} unresolved" for r, t in pending.items() if t >= since
    ]


def evaluate(
    truths: Iterable[Truth], d: Decisions, events: Iterable[dict[str, Any]] | None = None
) -> Report:
    """Score ``d`` against the truth. With the ``events``, also count the churn_risk
    alerts raised when the customer had nothing open (``open_issues``)."""
    truths = list(truths)
    by_customer: dict[str, list[tuple[str, int]]] = {}
    for cid, kind, at in d.alerts:
        by_customer.setdefault(cid, []).append((kind, at))
    correct = 0
    confusion: dict[str, dict[str, int]] = {}
    predicted: dict[str, str | None] = {}
    right: dict[str, list[int]] = {}
    for t in truths:
        stage, dtype = d.states.get(t.customer_id, ("", ""))
        ok = stage_right(t.stage, stage)
        correct += ok
        tally = right.setdefault(t.archetype, [0, 0])
        tally[0] += ok
        tally[1] += 1
        row = confusion.setdefault(t.stage, {})
        row[stage or "none"] = row.get(stage or "none", 0) + 1
        predicted[t.customer_id] = dtype if stage in ("decline", "churned") else None
    per_type = {}
    for kind in DEFECTORS:
        true_k = {t.customer_id for t in truths if t.defection == kind}
        pred_k = {c for c, p in predicted.items() if p == kind}
        hit = len(true_k & pred_k)
        per_type[kind] = {
            "precision": hit / len(pred_k) if pred_k else 0.0,
            "recall": hit / len(true_k) if true_k else 0.0,
            "support": float(len(true_k)),
        }
    loyal = [t for t in truths if t.archetype == "loyal"]
    loyal_alerted = sum(
        1 for t in loyal if any(k in ALARMS for k, _ in by_customer.get(t.customer_id, []))
    )
    wobblers = [t for t in truths if t.archetype == "wobbler"]
    recovered = sum(
        1
        for t in wobblers
        if {"decline", "recovered"} <= {k for k, _ in by_customer.get(t.customer_id, [])}
    )
    delays = []
    for t in truths:
        if t.defection is None:
            continue
        ats = [at for k, at in by_customer.get(t.customer_id, []) if k in ("decline", "churned")]
        if ats:
            delays.append((min(ats) - _ms(t.last_purchase_at)) / 86_400_000)
    days = {}
    if delays:
        q = statistics.quantiles(delays, n=10) if len(delays) > 1 else [delays[0]] * 9
        days = {"median": statistics.median(delays), "p10": q[0], "p90": q[-1]}
    alarmed: dict[str, tuple[int, int]] = {}
    for t in truths:
        hit = any(k in ALARMS for k, _ in by_customer.get(t.customer_id, []))
        a, n = alarmed.get(t.archetype, (0, 0))
        alarmed[t.archetype] = (a + hit, n + 1)
    unrecovered = 0
    for t in wobblers:
        seen = sorted(by_customer.get(t.customer_id, []), key=lambda x: x[1])
        last_alarm = max((at for k, at in seen if k in ALARMS), default=None)
        unrecovered += last_alarm is not None and not any(
            k == "recovered" and at >= last_alarm for k, at in seen
        )
    true_churned = {t.customer_id for t in truths if t.stage == "churned"}
    decided_churned = {
        t.customer_id for t in truths if d.states.get(t.customer_id, ("", ""))[0] == "churned"
    }
    hit = len(true_churned & decided_churned)

    def typed_unknown(archetype: str) -> float:
        group = [t for t in truths if t.archetype == archetype]
        return _share(sum(predicted[t.customer_id] == "unknown" for t in group), len(group))

    risks = [i for i, (_, kind, _) in enumerate(d.alerts) if kind == "churn_risk"]
    without = None if d.evidence is None else sum(not d.evidence[i] for i in risks)
    nothing_open = None
    if events is not None:
        wanted = {d.alerts[i][0] for i in risks}
        theirs: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            if customer_of(e) in wanted:
                theirs.setdefault(customer_of(e), []).append(e)
        nothing_open = sum(
            not open_issues(theirs.get(d.alerts[i][0], []), d.alerts[i][0], d.alerts[i][2])
            for i in risks
        )
    return Report(
        customers=len(truths),
        stage_accuracy=correct / len(truths) if truths else 0.0,
        per_type=per_type,
        loyal_customers=len(loyal),
        loyal_alerted=loyal_alerted,
        wobblers_recovered=recovered / len(wobblers) if wobblers else 0.0,
        days_to_decline_alert=days,
        stage_confusion=confusion,
        stream="behaviour" if any(t.stream == "behaviour" for t in truths) else "rules",
        alarmed=alarmed,
        stage_by_archetype={a: _share(*v) for a, v in right.items()},
        churned_precision=_share(hit, len(decided_churned)),
        churned_recall=_share(hit, len(true_churned)),
        silent_unknown=typed_unknown("silent_leaver"),
        one_off_unknown=typed_unknown("one_off"),
        wobblers_unrecovered=_share(unrecovered, len(wobblers)),
        churn_risk_alerts=len(risks),
        churn_risk_without_evidence=without,
        churn_risk_nothing_open=nothing_open,
    )


def run_in_process(
    events: Iterable[dict[str, Any]],
    partitions: int = 8,
    batch: int = 1000,
    lateness_ms: int = DEFAULT_RULES.allowed_lateness_ms,
    alerts_out: list[dict[str, Any]] | None = None,
    until_ms: int | None = None,
    rules: Rules | None = None,
) -> Decisions:
    """The worker's batch path over events (plain or CloudEvents) in arrival order,
    partitioned like Kafka, then the period closed as `touchstream tick --until` does
    (a clock message on every partition) at ``until_ms``, or the latest event time.
    ``alerts_out``, if given, receives every alert message."""
    table: dict[str, bytes] = {}
    offsets = [0] * partitions
    proc = Processor(rules or Rules(allowed_lateness_ms=lateness_ms), partitions)
    latest = 0
    alerts: list[tuple[str, str, int]] = []
    evidence: list[tuple[str, ...]] = []
    now = datetime(2000, 1, 1, tzinfo=UTC)  # dead letters' received_at only

    def scan(p: int) -> Iterable[tuple[str, bytes]]:
        return [(k, v) for k, v in table.items() if Stored.partition_of(v) == p]

    def run(msgs: list[RawMessage]) -> None:
        r = proc.process(msgs, table.get, now, scan)
        table.update(r.states)
        for _, value in r.alerts:
            a = orjson.loads(value)
            alerts.append((a["customer_id"], a["kind"], _ms(a["at"])))
            evidence.append(tuple(a.get("evidence") or ()))
            if alerts_out is not None:
                alerts_out.append(a)

    pending: list[RawMessage] = []
    for e in events:
        key = customer_of(e).encode()
        latest = max(latest, epoch_ms(instant_of(e)))
        p = key_partition(key, partitions)
        pending.append(RawMessage("touchpoints", p, offsets[p], key, orjson.dumps(e)))
        offsets[p] += 1
        if len(pending) >= batch:
            run(pending)
            pending = []
    close = clock_value(until_ms if until_ms is not None else latest)
    for p in range(partitions):
        pending.append(RawMessage("touchpoints", p, offsets[p], CLOCK_KEY, close))
    run(pending)
    states = {}
    for cid, raw in table.items():
        s = Stored.decode(raw).state
        states[cid] = (s.stage or "", s.defection_type or "")
    return Decisions(states, alerts, evidence)


def from_clickhouse(sink: Any) -> Decisions:
    db = sink.database
    _, rows = sink.query(
        f"SELECT customer_id, stage, defection_type FROM {db}.customer_state FINAL"
    )
    _, alert_rows = sink.query(
        f"SELECT customer_id, kind, toUInt64(at), evidence FROM {db}.alerts FINAL"
    )
    return Decisions(
        {r[0]: (r[1], r[2]) for r in rows},
        [(r[0], r[1], int(r[2]) * 1000) for r in alert_rows],
        [tuple(orjson.loads(r[3] or "[]")) for r in alert_rows],  # a JSON array of strings
    )


def render(report: Report, console: Any) -> None:
    from rich.table import Table

    t = Table(
        "defection type",
        "precision",
        "recall",
        "customers",
        title="Defection type",
        title_justify="left",
    )
    for kind, m in report.per_type.items():
        t.add_row(kind, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['support']:.0f}")
    console.print(t)
    c = Table(
        "truth \\ decided",
        *sorted({k for r in report.stage_confusion.values() for k in r}),
        title="Stage at the end",
        title_justify="left",
    )
    cols = list(c.columns)[1:]
    for truth, row in sorted(report.stage_confusion.items()):
        c.add_row(truth, *(str(row.get(str(col.header), 0)) for col in cols))
    console.print(c)
    d = report.days_to_decline_alert
    console.print(
        f"customers {report.customers}; stage accuracy {report.stage_accuracy:.3f}; "
        f"loyal customers alerted {report.loyal_alerted}/{report.loyal_customers} "
        f"({report.loyal_false_alert_rate:.2%}); wobblers alerted and recovered "
        f"{report.wobblers_recovered:.2%}; days from last purchase to the decline alert: "
        + (f"median {d['median']:.0f}, p10 {d['p10']:.0f}, p90 {d['p90']:.0f}" if d else "n/a")
    )
    if report.stream == "behaviour":
        a = Table(
            "archetype",
            "customers",
            "alarmed",
            "share",
            "stage right",
            title="Alarms (churn_risk, decline or churned) and stages per archetype",
            title_justify="left",
        )
        for name, (hit, n) in sorted(report.alarmed.items()):
            role = " (stay target)" if name in STAYERS else ""
            a.add_row(
                name + role,
                str(n),
                str(hit),
                f"{_share(hit, n):.1%}",
                f"{report.stage_by_archetype.get(name, 0.0):.1%}",
            )
        console.print(a)
        console.print(
            f"one-off buyers typed unknown {report.one_off_unknown:.1%}; wobblers alarmed and "
            f"not recovered {report.wobblers_unrecovered:.1%}; churn_risk alerts "
            f"{report.churn_risk_alerts}"
            + (
                ""
                if report.churn_risk_nothing_open is None
                else f", {report.churn_risk_nothing_open} of them raised with no complaint "
                "open and "
                "no unresolved call pending"
            )
        )
    k = Table("target", "figure", "met", title="Targets", title_justify="left")
    for what, figure, met in report.checks():
        k.add_row(what, figure, "yes" if met else "NO")
    console.print(k)
    console.print("targets met" if report.meets_targets() else "targets NOT met")
