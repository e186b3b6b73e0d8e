"""What a worker tells its operators: ``GET /metrics`` (Prometheus) and ``GET /health``
on its Faust web server (docs/operations.md, "Monitoring").

Nothing here costs the hot path per event. The counters are the ones the worker keeps
anyway (``agents.app.Totals``, the ``BatchingWriter``'s rows per table, the processor's
customers and deadlines), read when Prometheus scrapes; the histograms are observed once
per batch and once per ClickHouse insert; dead letters and alerts are counted per batch
from the rows the batch made; garbage collection pauses are timed per collection, by a
gc callback. Every worker has its own ``CollectorRegistry`` (not the
process-wide one), so several workers in one process (tests) never share a series.

Two pure functions decide what the pages say: ``reason_class`` (a dead letter's reason
-> one of a few fixed classes, so the ``reason`` label never carries raw text) and
``health`` (the worker's condition -> an HTTP status and a small JSON body).
"""

from __future__ import annotations

import gc
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from sinks.errors import RowsRefused, SinkError, SinkFatal
from sinks.tables import BY_NAME
from touchstream.domain.alerts import KINDS

# Dead-letter reasons, by how they begin (the texts of schemas/decode.py, schemas/events.py
# and agents/processor.py; tests/unit/test_metrics.py makes each one and checks its class).
REASON_CLASSES = (
    "malformed",  # not JSON, no value, not a JSON object
    "invalid_event",  # JSON, but not the event contract (a field missing or wrong)
    "future_time",  # dated too far after its arrival
    "key_mismatch",  # the message key is not the customer_id
    "wrong_partition",  # the customer lives on another partition
    "amount_limit",  # a total beyond what ClickHouse stores
    "invalid_clock",  # a clock message (touchstream tick) without a valid time
    "processing_error",  # the event could not be applied (a bug: see the worker's log)
    "clickhouse_refused",  # ClickHouse refused the row the event made
    "other",
)
_BY_PREFIX = (
    ("not valid JSON", "malformed"),
    ("empty message", "malformed"),
    ("expected a JSON object", "malformed"),
    ("invalid event:", "invalid_event"),
    ("invalid CloudEvent", "invalid_event"),
    ("occurred_at ", "future_time"),
    ("message key ", "key_mismatch"),
    ("message on partition ", "wrong_partition"),
    ("invalid clock message", "invalid_clock"),
    ("could not be processed", "processing_error"),
    ("ClickHouse refused", "clickhouse_refused"),
)


def reason_class(reason: str) -> str:
    """The class of a dead letter's reason: one of ``REASON_CLASSES``."""
    for prefix, cls in _BY_PREFIX:
        if reason.startswith(prefix):
            return cls
    if " would take customer " in reason:
        return "amount_limit"
    return "other"


@dataclass(frozen=True)
class Condition:
    """What the health decision looks at; times are seconds on one monotonic clock, passed
    in (``now``), None when it never happened."""

    now: float
    state: str  # the app's service state: init, running, stopping, shutdown, crashed
    joined: bool  # the worker has had a partition assignment (it is in the group)
    rebalancing: bool
    recovering: bool  # the table is being restored from its changelog
    partitions: int  # input partitions assigned to this worker
    last_batch: float | None
    last_write: float | None  # the latest ClickHouse insert that succeeded
    failing_since: float | None  # the first failed insert since the latest success
    write_error: str | None  # the latest failed insert's reason
    fatal: str | None  # why the worker stopped itself


def _age(now: float, t: float | None) -> float | None:
    return None if t is None else round(max(0.0, now - t), 3)


def health(c: Condition, failing_limit_s: float) -> tuple[int, dict[str, Any]]:
    """The worker's health: 200 or 503, and the body of ``GET /health``. Unhealthy (503)
    when it stopped itself on a fatal error, is stopping, or its ClickHouse writes have
    failed for longer than ``failing_limit_s``. ``ready`` (it has its partitions and its
    table, and processes) is reported but does not make it unhealthy: a rebalance or a
    table recovery is part of normal work."""
    problems = []
    if c.fatal is not None:
        problems.append(f"stopped on a fatal error: {c.fatal}")
    if c.state in ("stopping", "shutdown", "crashed"):
        problems.append(f"the worker is {c.state}")
    failing = _age(c.now, c.failing_since)
    if failing is not None and failing > failing_limit_s:
        problems.append(
            f"ClickHouse writes have failed for {failing:.0f} s "
            f"(TOUCHSTREAM_HEALTH_CLICKHOUSE_FAILING_S={failing_limit_s:g}): {c.write_error}; "
            "check that the server is up and reachable"
        )
    ready = (
        c.state == "running"
        and c.joined
        and not c.rebalancing
        and not c.recovering
        and not problems
    )
    body = {
        "healthy": not problems,
        "ready": ready,
        "state": c.state,
        "rebalancing": c.rebalancing,
        "recovering": c.recovering,
        "partitions_assigned": c.partitions,
        "last_batch_age_s": _age(c.now, c.last_batch),
        "last_clickhouse_write_age_s": _age(c.now, c.last_write),
        "clickhouse_failing_s": failing,
        "clickhouse_error": c.write_error if failing is not None else None,
        "fatal_error": c.fatal,
        "problems": problems,
    }
    return (503 if problems else 200), body


# Batches take milliseconds at low load and up to seconds at full load (5,000 events);
# inserts the same, and up to the driver's timeouts when the server struggles.
BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
INSERT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# A generation-0 collection takes milliseconds to tens of them, a full one of a large
# heap hundreds (docs/benchmarks.md): the event loop stands still meanwhile.
GC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class GcPauses:
    """Garbage collection pauses by generation, timed by ``gc.callbacks`` (start to stop,
    ``time.perf_counter``). Kept as plain counts, not a prometheus_client Histogram: a
    collection may start inside any code, one holding a metric's lock included, so the
    callback takes no lock (the GIL is held through a collection) and allocates little.
    Collections are process-wide: one of these per process (``GC_PAUSES``), read by
    every worker's registry."""

    def __init__(self, buckets: tuple[float, ...] = GC_BUCKETS) -> None:
        self.buckets = buckets
        # Per generation: observations per bucket (the last: above every bound), and sums.
        self.counts = [[0] * (len(buckets) + 1) for _ in range(3)]
        self.sums = [0.0, 0.0, 0.0]
        # Unreachable objects each generation freed: cycles left by the code, whose
        # clearing is part of the pause.
        self.collected = [0, 0, 0]
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.observe(info["generation"], time.perf_counter() - self._started)
        self.collected[info["generation"]] += info["collected"]

    def observe(self, generation: int, seconds: float) -> None:
        self.counts[generation][bisect_left(self.buckets, seconds)] += 1
        self.sums[generation] += seconds

    def install(self) -> None:
        """Start timing collections (once per process, however often it is called)."""
        if self.callback not in gc.callbacks:
            gc.callbacks.append(self.callback)

    def remove(self) -> None:
        while self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)

    def metric(self) -> HistogramMetricFamily:
        h = HistogramMetricFamily(
            "touchstream_gc_pause_seconds",
            "Garbage collection pauses of the worker process by generation (0, 1, 2: 2 is "
            "a full collection), timed with gc.callbacks; the event loop stands still "
            "for each",
            labels=["generation"],
        )
        for g in range(3):
            counts, cumulative, buckets = self.counts[g], 0, []
            for bound, n in zip((*self.buckets, float("inf")), counts, strict=True):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            h.add_metric([str(g)], buckets, self.sums[g])
        return h


GC_PAUSES = GcPauses()

# The worker's collector. A batch allocates many short-lived objects and keeps some
# (decoded states in the cache, rows in flight): generation 0 is collected every 10,000
# net allocations, and what a batch leaves alive is frozen after it (``after_batch``), so
# a collection walks only the objects made since the last batch, never the cache and the
# deadline index (measured, 100,000 purchases of 20,000 customers: pauses p99 29-34 ms
# against 115 ms with 50,000 and no freezing, CPU per event within the noise). Frozen
# objects are still freed by reference counting; cycles among them wait for the full
# collection the worker runs every FULL_COLLECTION_S.
GC_THRESHOLD = (10_000, 20, 20)
FULL_COLLECTION_S = 3600.0


_policy = {"on": False}  # the worker process's (worker_gc); off in tests and tools


def worker_gc() -> None:
    """The worker's collector settings, from now on: the heap so far frozen."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    _policy["on"] = True


def stop_worker_gc() -> None:
    """after_batch and full_collection do nothing again (the bench, after a block)."""
    _policy["on"] = False


def after_batch() -> None:
    """What the batch left alive joins the frozen heap: later collections skip it."""
    if _policy["on"]:
        gc.freeze()


def full_collection() -> None:
    """Everything frozen so far is collected once (cycles among frozen objects), then
    frozen again: one long pause, every FULL_COLLECTION_S."""
    if _policy["on"]:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


_REASON = BY_NAME["dead_letters"].column_names.index("reason")
_KIND = BY_NAME["alerts"].column_names.index("kind")


@dataclass
class Sources:
    """Where the scrape reads what the worker counts anyway (set by ``Metrics.watch``)."""

    app: Any  # the Faust app
    input_topic: str
    totals: Any  # agents.app.Totals
    processor: Any  # agents.processor.Processor
    writer: Any  # sinks.BatchingWriter
    fatal: Callable[[], str | None]


class Metrics:
    """One worker's metrics and health. The hooks (``batch_processed``, ``batch_done``,
    ``effects_done``, ``insert``) are called by agents/app.py; ``watch`` tells it where the
    rest is read at scrape time."""

    def __init__(self, failing_limit_s: float, clock: Callable[[], float] = time.monotonic):
        self.failing_limit_s = failing_limit_s
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        self.batch_seconds = Histogram(
            "touchstream_batch_process_seconds",
            "Time to process one batch of input messages (decode, validate, fold into "
            "state, make rows and records), on the worker's event loop, with the turns it "
            "gives other tasks between slices of the batch",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.batch_complete_seconds = Histogram(
            "touchstream_batch_complete_seconds",
            "Time from a batch being handed to the worker until all its effects are "
            "written (ClickHouse, output topics, changelog), when its offsets may commit",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.insert_seconds = Histogram(
            "touchstream_clickhouse_insert_seconds",
            "Duration of one successful ClickHouse insert, per table",
            ["table"],
            buckets=INSERT_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = dict.fromkeys(REASON_CLASSES, 0)
        self.alerts = dict.fromkeys(KINDS, 0)
        self.insert_failures = {"transient": 0, "refused": 0, "fatal": 0}
        self.last_batch: float | None = None
        self.last_write: float | None = None
        self.failing_since: float | None = None
        self.write_error: str | None = None
        self.sources: Sources | None = None
        self.joined = False
        self.registry.register(_Scrape(self))
        # The standard process_* series (CPU, resident memory, start time: restarts).
        ProcessCollector(registry=self.registry)
        GC_PAUSES.install()
        self.registry.register(_GcScrape(GC_PAUSES))

    # -- hooks, called by the worker ---------------------------------------------------

    def batch_processed(self, seconds: float) -> None:
        """A batch of input messages was processed (its effects are on their way)."""
        self.batch_seconds.observe(seconds)
        self.last_batch = self.clock()

    def batch_done(self, seconds: float) -> None:
        """A batch's effects are all written, ``seconds`` after it was handed over."""
        self.batch_complete_seconds.observe(seconds)

    def effects_done(self, rows: Mapping[str, list[Any]]) -> None:
        """A batch's (or a clock tick's) rows are written: count its dead letters and
        alerts. Per batch, over those rows only (few)."""
        dead = self.dead_letters
        for row in rows.get("dead_letters", ()):
            cls = reason_class(row[_REASON])
            dead[cls] += 1
        alerts = self.alerts
        for row in rows.get("alerts", ()):
            kind = row[_KIND]
            alerts[kind] = alerts.get(kind, 0) + 1

    def insert(self, table: str, rows: int, seconds: float, error: SinkError | None) -> None:
        """``BatchingWriter.on_insert``: in the ClickHouse thread."""
        if error is None:
            self.insert_seconds.labels(table).observe(seconds)
            self.last_write = self.clock()
            self.failing_since = self.write_error = None
            return
        if isinstance(error, RowsRefused):
            self.insert_failures["refused"] += 1  # the writer isolates and parks the rows
            return
        self.insert_failures["fatal" if isinstance(error, SinkFatal) else "transient"] += 1
        self.write_error = str(error)
        if self.failing_since is None:
            self.failing_since = self.clock()

    def watch(
        self,
        app: Any,
        input_topic: str,
        totals: Any,
        processor: Any,
        writer: Any,
        fatal: Callable[[], str | None],
    ) -> None:
        self.sources = Sources(app, input_topic, totals, processor, writer, fatal)

        @app.on_partitions_assigned.connect
        async def on_assigned(sender: Any, assigned: Any, **_: Any) -> None:
            self.joined = True

    # -- reading -----------------------------------------------------------------------

    def condition(self) -> Condition:
        s = self.sources
        app = s.app if s is not None else None
        return Condition(
            now=self.clock(),
            state=str(getattr(app, "state", "init")),
            joined=self.joined,
            rebalancing=bool(getattr(app, "rebalancing", False)),
            recovering=bool(getattr(app, "in_recovery", False)),
            partitions=len(self.assigned()),
            last_batch=self.last_batch,
            last_write=self.last_write,
            failing_since=self.failing_since,
            write_error=self.write_error,
            fatal=s.fatal() if s is not None else None,
        )

    def health(self) -> tuple[int, dict[str, Any]]:
        return health(self.condition(), self.failing_limit_s)

    def assigned(self) -> list[Any]:
        """The input topic's partitions assigned to this worker (TPs)."""
        s = self.sources
        if s is None:
            return []
        try:
            actives = s.app.assignor.assigned_actives()
        except Exception:  # not started, or stopped
            return []
        return [tp for tp in actives if tp.topic == s.input_topic]

    def lag(self) -> dict[int, int]:
        """Per assigned input partition: the log end (the consumer's highwater, from its
        latest fetch) less the committed offset (0 before the group's first commit).
        A partition not fetched yet has no highwater and is left out."""
        s = self.sources
        consumer = getattr(s.app, "_consumer", None) if s is not None else None
        if consumer is None:
            return {}
        committed = getattr(consumer, "_committed_offset", {})
        out = {}
        for tp in self.assigned():
            try:
                end = consumer.highwater(tp)
            except Exception:  # revoked since, or the consumer is gone
                continue
            if end is None:
                continue
            out[tp.partition] = max(0, end - (committed.get(tp) or 0))
        return out

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Scrape(Collector):
    """The series read at scrape time from what the worker counts anyway."""

    def __init__(self, m: Metrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m, s = self.m, self.m.sources
        events = CounterMetricFamily(
            "touchstream_events",
            "Input messages by outcome, once their batch's effects are written: accepted "
            "(applied), duplicate (an event_id seen before), redelivered (an offset applied "
            "before), rejected (dead-lettered). Events per second: rate() of this",
            labels=["outcome"],
        )
        totals = s.totals if s is not None else None
        for outcome, field in (
            ("accepted", "accepted"),
            ("duplicate", "duplicates"),
            ("redelivered", "redelivered"),
            ("rejected", "rejected"),
        ):
            events.add_metric([outcome], getattr(totals, field, 0))
        yield events
        yield CounterMetricFamily(
            "touchstream_batches",
            "Batches (and clock ticks) whose effects are written",
            value=getattr(totals, "batches", 0),
        )
        yield CounterMetricFamily(
            "touchstream_deadlines_fired",
            "Silence deadlines fired (a customer's stage re-decided because it went quiet)",
            value=getattr(totals, "deadlines_fired", 0),
        )
        writer = s.writer if s is not None else None
        written = getattr(writer, "written_by_table", {})
        refused = getattr(writer, "refused_by_table", {})
        dead = CounterMetricFamily(
            "touchstream_dead_letters",
            "Dead letters by reason class: rejected input messages, and rows ClickHouse "
            "refused (clickhouse_refused)",
            labels=["reason"],
        )
        for cls, n in m.dead_letters.items():
            if cls == "clickhouse_refused":
                n += sum(v for t, v in refused.items() if t != "dead_letters")
            dead.add_metric([cls], n)
        yield dead
        alerts = CounterMetricFamily("touchstream_alerts", "Churn alerts sent", labels=["kind"])
        for kind, n in m.alerts.items():
            alerts.add_metric([kind], n)
        yield alerts
        rows = CounterMetricFamily(
            "touchstream_clickhouse_rows_written", "Rows written to ClickHouse", labels=["table"]
        )
        for table, n in sorted(written.items()):
            rows.add_metric([table], n)
        yield rows
        bad = CounterMetricFamily(
            "touchstream_clickhouse_rows_refused",
            "Rows ClickHouse refused (set aside in dead_letters)",
            labels=["table"],
        )
        for table, n in sorted(refused.items()):
            bad.add_metric([table], n)
        yield bad
        failures = CounterMetricFamily(
            "touchstream_clickhouse_insert_failures",
            "Failed ClickHouse inserts by kind: transient (retried), refused (rows set "
            "aside), fatal (the worker stops)",
            labels=["kind"],
        )
        for kind, n in m.insert_failures.items():
            failures.add_metric([kind], n)
        yield failures
        status, body = m.health()
        yield CounterMetricFamily(
            "touchstream_fatal_errors",
            "Fatal errors (a configuration error: the worker stops itself)",
            value=1 if body["fatal_error"] else 0,
        )
        yield GaugeMetricFamily(
            "touchstream_healthy", "1 while GET /health answers 200", value=int(status == 200)
        )
        yield GaugeMetricFamily(
            "touchstream_ready",
            "1 while the worker has its partitions and its table and processes",
            value=int(body["ready"]),
        )
        yield GaugeMetricFamily(
            "touchstream_partitions_assigned",
            "Input partitions assigned to this worker",
            value=body["partitions_assigned"],
        )
        yield GaugeMetricFamily(
            "touchstream_clickhouse_failing_seconds",
            "How long ClickHouse inserts have failed without a success (0: they do not)",
            value=body["clickhouse_failing_s"] or 0.0,
        )
        lag = GaugeMetricFamily(
            "touchstream_consumer_lag",
            "Messages of an input partition not yet committed: the log end (the "
            "consumer's highwater) less the committed offset",
            labels=["topic", "partition"],
        )
        if s is not None:
            for p, n in sorted(m.lag().items()):
                lag.add_metric([s.input_topic, str(p)], n)
        yield lag
        processor = s.processor if s is not None else None
        yield GaugeMetricFamily(
            "touchstream_customers",
            "Customers in this worker's state (its partitions' table)",
            value=processor.customers_held() if processor is not None else 0,
        )
        yield GaugeMetricFamily(
            "touchstream_deadlines_pending",
            "Silence deadlines waiting for stream time to pass them (this worker's partitions)",
            value=processor.deadlines_pending() if processor is not None else 0,
        )
        yield GaugeMetricFamily(
            "touchstream_partitions_indexing",
            "Partitions whose deadline index is being rebuilt after an assignment (their "
            "deadlines wait until it is whole)",
            value=len(processor.building) if processor is not None else 0,
        )


class _GcScrape(Collector):
    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses

    def collect(self) -> Iterator[Metric]:
        yield self.pauses.metric()
        c = CounterMetricFamily(
            "touchstream_gc_collected_objects",
            "Unreachable objects (reference cycles) the collector freed, by generation",
            labels=["generation"],
        )
        for g in range(3):
            c.add_metric([str(g)], self.pauses.collected[g])
        yield c


def add_ops_pages(app: Any, metrics: Metrics) -> None:
    """Register ``GET /metrics`` and ``GET /health`` on the app's web server."""
    from faust.web import Request, Response, View

    @app.page("/metrics", name="metrics")
    class MetricsPage(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/health", name="health")
    class HealthPage(View):
        async def get(self, request: Request) -> Response:
            status, body = metrics.health()
            return self.json(body, status=status)
