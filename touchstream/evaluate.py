"""`touchstream evaluate`: score the pipeline's decisions against planted ground truth.

The decisions come either from ClickHouse after a real run (customer_state, alerts), or
from the same batch pipeline run in process over an events file (agents.pipeline with
Kafka's partitioning; no broker), which is what the quick checks use.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kafka.partitioner.default import murmur2

from agents.pipeline import Processor, RawMessage, Stored
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules
from touchstream.simulate import DEFECTORS, Truth

ALARMS = ("churn_risk", "decline", "churned")


@dataclass(frozen=True)
class Decisions:
    states: dict[str, tuple[str, str]]  # customer -> (stage, defection_type)
    alerts: list[tuple[str, str, int]]  # (customer, kind, at_ms)


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

    @property
    def loyal_false_alert_rate(self) -> float:
        return self.loyal_alerted / self.loyal_customers if self.loyal_customers else 0.0

    def meets_targets(self) -> bool:
        """The issue's aim: every type >= 0.9 precision and recall; < 2% loyal alerted."""
        return all(
            m["precision"] >= 0.9 and m["recall"] >= 0.9 for m in self.per_type.values()
        ) and self.loyal_false_alert_rate < 0.02


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def evaluate(truths: Iterable[Truth], d: Decisions) -> Report:
    truths = list(truths)
    by_customer: dict[str, list[tuple[str, int]]] = {}
    for cid, kind, at in d.alerts:
        by_customer.setdefault(cid, []).append((kind, at))
    correct = 0
    confusion: dict[str, dict[str, int]] = {}
    predicted: dict[str, str | None] = {}
    for t in truths:
        stage, dtype = d.states.get(t.customer_id, ("", ""))
        correct += stage == t.stage
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
        1 for t in wobblers
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
    return Report(
        customers=len(truths), stage_accuracy=correct / len(truths) if truths else 0.0,
        per_type=per_type, loyal_customers=len(loyal), loyal_alerted=loyal_alerted,
        wobblers_recovered=recovered / len(wobblers) if wobblers else 0.0,
        days_to_decline_alert=days, stage_confusion=confusion,
    )


def run_in_process(events: Iterable[dict[str, Any]], partitions: int = 8, batch: int = 1000,
                   lateness_ms: int = DEFAULT_RULES.allowed_lateness_ms) -> Decisions:
    """The worker's batch path over events in arrival order, partitioned like Kafka."""
    table: dict[str, bytes] = {}
    offsets = [0] * partitions
    proc = Processor(Rules(allowed_lateness_ms=lateness_ms), partitions)
    alerts: list[tuple[str, str, int]] = []
    now = datetime(2000, 1, 1, tzinfo=UTC)  # dead letters' received_at only

    def scan(p: int) -> Iterable[tuple[str, bytes]]:
        return [(k, v) for k, v in table.items() if Stored.partition_of(v) == p]

    def run(msgs: list[RawMessage]) -> None:
        r = proc.process(msgs, table.get, now, scan)
        table.update(r.states)
        for _, value in r.alerts:
            a = orjson.loads(value)
            alerts.append((a["customer_id"], a["kind"], _ms(a["at"])))

    pending: list[RawMessage] = []
    for e in events:
        key = e["customer_id"].encode()
        p = (murmur2(key) & 0x7FFFFFFF) % partitions
        pending.append(RawMessage("touchpoints", p, offsets[p], key, orjson.dumps(e)))
        offsets[p] += 1
        if len(pending) >= batch:
            run(pending)
            pending = []
    if pending:
        run(pending)
    states = {}
    for cid, raw in table.items():
        s = Stored.decode(raw).state
        states[cid] = (s.stage or "", s.defection_type or "")
    return Decisions(states, alerts)


def from_clickhouse(sink: Any) -> Decisions:
    db = sink.database
    _, rows = sink.query(
        f"SELECT customer_id, stage, defection_type FROM {db}.customer_state FINAL"
    )
    _, alert_rows = sink.query(f"SELECT customer_id, kind, toUInt64(at) FROM {db}.alerts FINAL")
    return Decisions(
        {r[0]: (r[1], r[2]) for r in rows},
        [(r[0], r[1], int(r[2]) * 1000) for r in alert_rows],
    )


def render(report: Report, console: Any) -> None:
    from rich.table import Table

    t = Table("defection type", "precision", "recall", "customers", title="Defection type",
              title_justify="left")
    for kind, m in report.per_type.items():
        t.add_row(kind, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['support']:.0f}")
    console.print(t)
    c = Table("truth \\ decided", *sorted({k for r in report.stage_confusion.values() for k in r}),
              title="Stage at the end", title_justify="left")
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
    console.print("targets met" if report.meets_targets() else "targets NOT met")
