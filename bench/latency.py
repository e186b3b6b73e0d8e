"""Latency at a fixed offered load: event to ClickHouse, and event to churn alert.

    python -m bench.latency --rate 400 --seconds 60            # its own broker
    python -m bench --only touchstream,latency --seconds 120   # rate = half the max
                                                               # that touchstream job measured

The issue asks for p50/p99 at "a fixed offered load of half the measured maximum": run it
from ``python -m bench`` after the ``touchstream`` throughput job (then ``--rate 0``, the
default there, means half of that job's median events/s), or give ``--rate`` yourself.

One Tansu broker, one ClickHouse server (Debian's 18.16, clickhouse-driver), ``touchstream
migrate`` and one ``touchstream worker`` process with TOUCHSTREAM_CLOCK=event and the
worker's default batching (a batch is what one fetch returned, at most batch_max 5,000;
fetches wait at most TOUCHSTREAM_FETCH_MAX_WAIT_MS, 100; --batch-within only matters
where Faust's own stream delivers);
bench/live.py starts them and warms the worker up first. Then aiokafka sends events at
``--rate`` per second for ``--seconds`` seconds, paced in 10 ms ticks, key = customer_id,
default (murmur2) partitioner. The workload: purchases of ``--customers`` customers drawn
at random, event time one second apart (so no silence deadline fires), and, as
``--close-share`` of the events, an ``account`` event ``change: closed`` of a customer who
already purchased (never one already closed): the domain moves that customer to decline at
once and raises a ``decline`` alert (touchstream/domain/update.py ``_on_signal``).

- event to ClickHouse: the send time of every event is kept by (partition, offset) from
  the producer's RecordMetadata; bench/live.OffsetPoller reads each partition's max
  offset in the events table every 50 ms; an event's latency is the first poll that saw
  it minus its send time: an upper bound, resolution one poll period plus one query.
- event to alert: an aiokafka consumer on the alerts topic (fetch_max_wait_ms 20: Tansu
  holds a fetch for its full max wait) notes when each decline alert arrives; latency =
  arrival minus the send time of that customer's account-closed event.

After the sending stops the job waits (up to --drain seconds) until every event is in
ClickHouse and every alert arrived. "Kept up" means: every event reached ClickHouse, the
median latency of the last third of the events is within 2x (+0.5 s) of the first third's
(no queue growing over the run), and the backlog when the sending stopped (events sent
but not yet seen in ClickHouse) was no more than what is in flight at that latency:
rate x (p99 + 1 s).
Sender, poller and consumer run in this process, on the same 2 cores as the worker, broker
and ClickHouse: on a busy machine they cost the worker some CPU.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson

from bench.common import START_S
from bench.live import (
    LiveWorker,
    OffsetPoller,
    backlog_at,
    coverage_latencies,
    live_worker,
    percentiles,
    process_figures,
    warm_up,
)


class Workload:
    """The latency job's events, in send order (module doc). ``event(i)`` returns the
    event and whether it closes an account."""

    def __init__(
        self, customers: int, close_share: float, seed: int = 1, prefix: str = "lat"
    ) -> None:
        self.customers, self.close_share, self.prefix = customers, close_share, prefix
        self.rng = random.Random(seed)
        self.open: list[str] = []  # purchased, not closed
        self.purchased: set[str] = set()
        self.closed: set[str] = set()

    def event(self, i: int) -> tuple[dict[str, Any], bool]:
        rng = self.rng
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(START_S + i))
        base = {"event_id": f"{self.prefix}-{i:09d}", "occurred_at": at, "source": "bench"}
        if self.open and rng.random() < self.close_share:
            j = rng.randrange(len(self.open))
            cid = self.open[j]
            self.open[j] = self.open[-1]
            self.open.pop()
            self.closed.add(cid)
            return {**base, "customer_id": cid, "type": "account", "change": "closed"}, True
        if len(self.closed) >= self.customers:
            raise ValueError("every customer's account is closed: raise --customers")
        while True:
            cid = f"L{rng.randrange(self.customers):07d}"
            if cid not in self.closed:
                break
        if cid not in self.purchased:
            self.purchased.add(cid)
            self.open.append(cid)
        return {
            **base,
            "customer_id": cid,
            "type": "purchase",
            "amount": round(rng.uniform(5.0, 250.0), 2),
            "currency": "USD",
            "channel": "web",
        }, False


@dataclass
class LatencyResult:
    rate_offered: float
    seconds: float
    sent: int = 0
    achieved_rate: float = 0.0
    closed: int = 0
    alerts_seen: int = 0
    to_clickhouse_ms: dict[str, float] = field(default_factory=dict)  # p50, p95, p99, max
    to_alert_ms: dict[str, float] = field(default_factory=dict)
    not_in_clickhouse: int = 0  # after the drain
    backlog_at_end: int = 0  # events sent but not in ClickHouse when sending stopped
    drain_s: float | None = None  # sending stopped -> everything in ClickHouse
    p50_first_third_ms: float | None = None
    p50_last_third_ms: float | None = None
    kept_up: bool = False
    poll_period_ms: float = 50.0
    poll_query_ms_median: float | None = None
    worker_ready_s: float | None = None  # spawn -> warm-up dead letters in ClickHouse
    worker: dict[str, float | None] = field(default_factory=dict)  # rss, peak, cpu
    worker_cpu_us_per_event: float | None = None
    settings: dict[str, object] = field(default_factory=dict)
    # The worker's GC pauses over the whole run (its /metrics histogram), per generation:
    # collections, total seconds and the bucket bounds the p50, p99 and slowest fall under.
    gc: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def _drive(
    lw: LiveWorker,
    poller: OffsetPoller,
    wl: Workload,
    rate: float,
    seconds: float,
    drain: float,
    tick: float,
    res: LatencyResult,
    status: Any,
) -> tuple[dict[tuple[int, int], float], dict[str, float], dict[str, float], float]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    s = lw.settings
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap, acks=1, linger_ms=0)
    # A short fetch wait: Tansu holds every fetch for its full max wait even when records
    # are there (aiokafka's default, 500 ms, would be counted as alert latency).
    consumer = AIOKafkaConsumer(
        s.alerts_topic,
        bootstrap_servers=s.bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await producer.start()
    await consumer.start()
    arrivals: dict[str, float] = {}

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=50)
            now = time.monotonic()
            for msgs in batch.values():
                for m in msgs:
                    a = orjson.loads(m.value)
                    if a.get("kind") == "decline":
                        arrivals.setdefault(a["customer_id"], now)

    ctask = asyncio.create_task(consume())
    pending: list[tuple[float, Any, str | None]] = []
    try:
        total = int(rate * seconds)
        t0 = time.monotonic()
        i = 0
        next_status = t0 + 1
        while i < total:
            now = time.monotonic()
            due = min(total, int(rate * (now - t0)) + 1)
            while i < due:
                ev, closes = wl.event(i)
                cid = ev["customer_id"]
                t = time.monotonic()
                fut = await producer.send(s.input_topic, orjson.dumps(ev), key=cid.encode())
                pending.append((t, fut, cid if closes else None))
                i += 1
            if now >= next_status:
                lw.check_alive()
                status.update(f"latency: sent {i:,} / {total:,}, {now - t0:.0f}s")
                next_status = now + 1
            await asyncio.sleep(max(0.0, tick - (time.monotonic() - now)))
        t_end = time.monotonic()
        res.sent = i
        res.achieved_rate = i / max(1e-9, t_end - t0)
        sends: dict[tuple[int, int], float] = {}
        closed_sent: dict[str, float] = {}
        for t, fut, cid in pending:
            md = await fut
            sends[(md.partition, md.offset)] = t
            if cid is not None:
                closed_sent[cid] = t
        res.closed = len(closed_sent)
        end: dict[int, int] = {}
        for p, o in sends:
            end[p] = max(end.get(p, 0), o + 1)
        # The offsets come from RecordMetadata: they must be contiguous per partition.
        for p, e in end.items():
            n = sum(1 for q, _ in sends if q == p)
            first = min(o for q, o in sends if q == p)
            if e - first != n:
                res.notes.append(
                    f"partition {p}: offsets {first}..{e - 1} for {n} events "
                    "(not contiguous: RecordMetadata offsets look wrong)"
                )
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline:
            lw.check_alive()
            if poller.covers(end) and set(closed_sent) <= set(arrivals):
                break
            seen = poller.latest()
            left = sum(max(0, e - 1 - seen.get(p, -1)) for p, e in end.items())
            status.update(
                f"latency: draining, {left:,} events not in ClickHouse yet, "
                f"{len(set(closed_sent) - set(arrivals))} alerts not arrived, "
                f"{time.monotonic() - t_end:.0f}s"
            )
            await asyncio.sleep(0.05)
        return sends, closed_sent, arrivals, t_end
    finally:
        ctask.cancel()
        await asyncio.gather(ctask, return_exceptions=True)
        await consumer.stop()
        await producer.stop()


def run_latency(
    broker_url: str,
    workdir: Path,
    rate: float,
    seconds: float,
    partitions: int = 8,
    customers: int = 50_000,
    close_share: float = 0.02,
    drain: float = 120,
    poll_s: float = 0.05,
    batch_within: float | None = None,
    console: Any = None,
) -> LatencyResult:
    from rich.console import Console

    console = console or Console()
    if rate <= 0:
        raise ValueError("--rate must be > 0 events/s")
    res = LatencyResult(rate, seconds, poll_period_ms=poll_s * 1000)
    wl = Workload(customers, close_share, prefix=f"lat-{uuid.uuid4().hex[:6]}")
    with live_worker(broker_url, workdir, partitions, batch_within) as lw:
        s = lw.settings
        res.settings = {
            "partitions": s.partitions,
            "batch_max": s.batch_max,
            "batch_within_s": s.batch_within_s,
            "clock": s.clock,
            "customers": customers,
            "close_share": close_share,
            "clickhouse": "server (clickhouse-driver)",
        }
        with console.status("latency: starting ClickHouse, migrate, worker, warm-up"):
            res.worker_ready_s = warm_up(lw)
        console.print(
            f"latency: worker ready {res.worker_ready_s:.1f}s after spawn; sending "
            f"{rate:,.0f} events/s for {seconds:.0f}s"
        )
        cpu0 = process_figures(lw.proc.pid)["cpu_s"]
        with OffsetPoller(lw, poll_s) as poller, console.status("latency: sending") as st:
            sends, closed_sent, arrivals, t_end = asyncio.run(
                _drive(lw, poller, wl, rate, seconds, drain, 0.01, res, st)
            )
        res.worker = process_figures(lw.proc.pid)
        try:
            res.gc = gc_pauses_of(f"http://127.0.0.1:{s.web_port}/metrics")
        except OSError as e:
            res.notes.append(f"the worker's GC pauses could not be read ({e})")
        polls = list(poller.polls)
    if res.worker.get("cpu_s") is not None and cpu0 is not None and res.sent:
        res.worker_cpu_us_per_event = (res.worker["cpu_s"] - cpu0) / res.sent * 1e6  # type: ignore[operator]
    lat, res.not_in_clickhouse = coverage_latencies(sends, polls)
    res.to_clickhouse_ms = {k: v * 1000 for k, v in percentiles(list(lat.values())).items()}
    res.to_clickhouse_ms["n"] = len(lat)
    alert_lat = [arrivals[c] - t for c, t in closed_sent.items() if c in arrivals]
    res.alerts_seen = len(alert_lat)
    res.to_alert_ms = {k: v * 1000 for k, v in percentiles(alert_lat).items()}
    res.to_alert_ms["n"] = len(alert_lat)
    res.backlog_at_end = backlog_at(sends, polls, t_end)
    last_offsets = _ends(sends)
    done = [
        t
        for t, maxes in polls
        if t >= t_end and all(maxes.get(p, -1) >= o for p, o in last_offsets.items())
    ]
    res.drain_s = done[0] - t_end if done else None
    res.poll_query_ms_median = percentiles(poller.query_s)["p50"] * 1000 if poller.query_s else None
    by_send = sorted(sends.items(), key=lambda kv: kv[1])
    third = len(by_send) // 3
    if third:
        first = [lat[k] for k, _ in by_send[:third] if k in lat]
        last = [lat[k] for k, _ in by_send[-third:] if k in lat]
        if first:
            res.p50_first_third_ms = percentiles(first)["p50"] * 1000
        if last:
            res.p50_last_third_ms = percentiles(last)["p50"] * 1000
    p99_s = res.to_clickhouse_ms.get("p99", 0) / 1000
    res.kept_up = bool(
        res.not_in_clickhouse == 0
        and res.backlog_at_end <= rate * (p99_s + 1)
        and res.p50_first_third_ms is not None
        and res.p50_last_third_ms is not None
        and res.p50_last_third_ms <= 2 * res.p50_first_third_ms + 500
    )
    return res


def gc_pauses_of(url: str) -> dict[str, dict[str, float]]:
    """The touchstream_gc_pause_seconds histogram a worker serves, per generation."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as r:
        text = r.read().decode()
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    collected: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "touchstream_gc_collected_objects":
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    collected[sample.labels.get("generation", "?")] = sample.value
        if family.name != "touchstream_gc_pause_seconds":
            continue
        for sample in family.samples:
            g = sample.labels.get("generation", "?")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(g, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[g] = sample.value
    out = {g: gc_summary(sorted(b), sums.get(g, 0.0)) for g, b in sorted(buckets.items())}
    for g, n in collected.items():
        out.setdefault(g, {})["collected"] = n
    return out


def gc_summary(cumulative: list[tuple[float, float]], total_s: float) -> dict[str, float]:
    """Collections, total seconds, and the smallest bucket bound at or above the p50, the
    p99 and the slowest collection, from a cumulative histogram [(le, count), ...]."""
    n = cumulative[-1][1] if cumulative else 0
    out = {"collections": n, "total_s": total_s}
    for name, q in (("p50_le_s", 0.5), ("p99_le_s", 0.99), ("max_le_s", 1.0)):
        if n:
            rank = max(1, math.ceil(q * n))
            out[name] = next(le for le, c in cumulative if c >= rank)
    return out


def _ends(sends: Mapping[tuple[int, int], float]) -> dict[int, int]:
    """partition -> highest offset sent."""
    out: dict[int, int] = {}
    for p, o in sends:
        out[p] = max(out.get(p, -1), o)
    return out


def _ms(d: Mapping[str, float], k: str) -> str:
    return f"{d[k]:,.0f}" if k in d else "-"


def report(res: LatencyResult, console: Any) -> None:
    from rich.table import Table

    t = Table(
        title=f"latency at {res.rate_offered:,.0f} events/s offered for {res.seconds:.0f}s (ms)",
        title_justify="left",
    )
    for col in ("path", "events", "p50", "p95", "p99", "max", "missing"):
        t.add_column(col, justify="left" if col == "path" else "right")
    t.add_row(
        "event -> ClickHouse (queryable)",
        f"{res.to_clickhouse_ms.get('n', 0):,.0f}",
        *(_ms(res.to_clickhouse_ms, k) for k in ("p50", "p95", "p99", "max")),
        f"{res.not_in_clickhouse:,}",
    )
    t.add_row(
        "account closed -> decline alert",
        f"{res.to_alert_ms.get('n', 0):,.0f}",
        *(_ms(res.to_alert_ms, k) for k in ("p50", "p95", "p99", "max")),
        f"{res.closed - res.alerts_seen:,}",
    )
    console.print(t)
    d = Table(title="latency details", title_justify="left", show_header=False)
    d.add_column("what")
    d.add_column("value", justify="right")
    drain = f"{res.drain_s:.1f}s" if res.drain_s is not None else "not within --drain"
    rows = [
        ("events sent (account closed among them)", f"{res.sent:,} ({res.closed:,})"),
        ("achieved send rate", f"{res.achieved_rate:,.1f} events/s"),
        ("kept up (no growing queue; see the module doc)", "yes" if res.kept_up else "NO"),
        (
            "backlog when sending stopped",
            f"{res.backlog_at_end:,} events "
            f"({res.backlog_at_end / max(1e-9, res.rate_offered):.1f}s of input)",
        ),
        ("sending stopped -> all in ClickHouse", drain),
        (
            "p50 event -> ClickHouse, first / last third",
            f"{res.p50_first_third_ms or 0:,.0f} / {res.p50_last_third_ms or 0:,.0f} ms",
        ),
        (
            "resolution (poll period + median query)",
            f"{res.poll_period_ms:.0f} + {res.poll_query_ms_median or 0:.1f} ms",
        ),
        ("worker ready after spawn (warm-up)", f"{res.worker_ready_s or 0:.1f}s"),
        (
            "worker RSS / peak RSS at the end",
            f"{res.worker.get('rss_mb') or 0:.0f} / {res.worker.get('peak_rss_mb') or 0:.0f} MB",
        ),
        (
            "worker CPU µs per event (all threads)",
            f"{res.worker_cpu_us_per_event:.0f}" if res.worker_cpu_us_per_event else "-",
        ),
        ("worker settings", ", ".join(f"{k} {v}" for k, v in res.settings.items())),
    ]
    for g, v in res.gc.items():
        bounds = ", ".join(
            f"{k[:-5]} <= {v[k] * 1000:g} ms"
            for k in ("p50_le_s", "p99_le_s", "max_le_s")
            if k in v
        )
        rows.append(
            (
                f"worker GC pauses, generation {g}",
                f"{v.get('collections', 0):,.0f} collections, "
                f"{v.get('total_s', 0) * 1000:,.0f} ms in all"
                + (f", {v['collected']:,.0f} unreachable objects freed" if "collected" in v else "")
                + (f"; {bounds}" if bounds else ""),
            )
        )
    for k, v in rows:
        d.add_row(k, v)
    console.print(d)
    for n in res.notes:
        console.print(f"[yellow]note:[/] {n}")


def as_json(res: LatencyResult) -> dict[str, object]:
    return asdict(res)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--rate",
    type=float,
    required=True,
    help="offered load, events/s. The issue's rule: half of touchstream's measured "
    "max (python -m bench --only touchstream,latency does that for you)",
)
@click.option("--seconds", default=60.0, show_default=True, help="how long to send")
@click.option("--partitions", default=8, show_default=True)
@click.option(
    "--customers", default=50_000, show_default=True, help="customers the purchases are drawn from"
)
@click.option(
    "--close-share",
    default=0.02,
    show_default=True,
    help="share of events that close an account (one decline alert each)",
)
@click.option(
    "--drain",
    default=120.0,
    show_default=True,
    help="longest wait after sending for the last events and alerts",
)
@click.option(
    "--batch-within",
    type=float,
    default=None,
    help="TOUCHSTREAM_BATCH_WITHIN_S for the worker (default: the worker's, 0.5)",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None)
@click.option("--keep", is_flag=True, help="keep the work directory (logs, data)")
def main(
    rate: float,
    seconds: float,
    partitions: int,
    customers: int,
    close_share: float,
    drain: float,
    batch_within: float | None,
    json_out: str | None,
    keep: bool,
) -> None:
    """Event-to-ClickHouse and event-to-alert latency at a fixed offered load."""
    import touchstream  # noqa: F401  (puts this repository first on sys.path)
    from bench.common import broker_workdir, standalone_end, standalone_start

    console, m = standalone_start()
    with broker_workdir("touchstream-latency-", keep, console) as (workdir, broker):
        res = run_latency(
            broker.url,
            workdir / "live",
            rate,
            seconds,
            partitions,
            customers,
            close_share,
            drain,
            batch_within=batch_within,
            console=console,
        )
    report(res, console)
    standalone_end(console, m, json_out, "latency", as_json(res))


if __name__ == "__main__":
    main()
