"""The Faust app: a thin loop around agents.processor.Processor.

Per batch of messages (each fetch of the consumer, up to ``batch_max`` records; see
agents/consumer.py for why not Faust's per-event stream), in this order, for at-least-once
with idempotent effects, and only then are the batch's offsets acked:
1. decode, validate and fold events into per-customer state (pure); the changed states
   go into the table's store at once, for the next batch to read;
2. send dead letters, lifecycle transitions and churn alerts to their topics at once
   (behind only the previous batch's records), and write events, states, dead letters and
   stream time to ClickHouse (versioned rows) once the previous batch's effects are done,
   in one insert per table with the rows of any batch processed meanwhile; wait until
   ClickHouse and the broker have them all;
3. send the changed states' changelog records and wait until the broker has them.
Up to EFFECTS_IN_FLIGHT batches' effects go out while the next batch is processed.
Silence deadlines fire as each partition's stream time passes them (less the allowed
lateness); with TOUCHSTREAM_CLOCK=live the wall clock ticks them too.
A crash anywhere before the offsets are committed replays the batch: rows are rewritten
with the same keys and versions, and the table's stored offsets skip what was applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import orjson

from agents.consumer import BatchApp, Emitter, KafkaEmitter
from agents.metrics import Metrics, add_ops_pages
from agents.processor import Processor, cutoffs_row_for
from agents.records import BatchResult, Stored
from agents.state import TableState, faust_store
from agents.web import add_customer_page
from schemas.events import epoch_ms
from sinks import BatchingWriter, Sink
from sinks.errors import SinkFatal, classify
from sinks.rows import sketch_row
from touchstream import model_store
from touchstream.config import Settings
from touchstream.domain.btyd import Model
from touchstream.domain.lifecycle import Rules
from touchstream.domain.scoring import RfmSketches
from touchstream.model_store import latest_version, load_chosen
from touchstream.security import faust_credentials

log = logging.getLogger("touchstream.worker")

# Messages processed between turns of the event loop: about 4 ms at 65 µs each, the most
# a till request waits for the batch in progress; a turn costs well under 1% of that.
YIELD_EVERY = 64
EFFECTS_IN_FLIGHT = 2  # batches whose effects may still be going out (handle())


@dataclass
class Totals:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    redelivered: int = 0
    rejected: int = 0
    rows: int = 0
    rows_refused: int = 0  # by ClickHouse, set aside in dead_letters
    deadlines_fired: int = 0

    def add(self, r: BatchResult) -> None:
        self.batches += 1
        self.accepted += r.accepted
        self.duplicates += r.duplicates
        self.redelivered += r.redelivered
        self.rejected += r.rejected
        self.deadlines_fired += r.deadlines_fired


@dataclass
class Worker:
    app: faust.App
    agent: Any
    table: Any
    outputs: dict[str, str]  # "dead_letters", "transitions", "alerts" -> topic name
    totals: Totals
    emitter: Emitter  # every record the worker produces goes through it
    stopped_because: str | None = None  # a fatal ClickHouse error stopped the worker
    metrics: Metrics | None = None  # GET /metrics and GET /health (agents/metrics.py)


class InOrder:
    """Runs steps one after another: each starts once the one before it is done. If one
    fails, every one after it fails too (nothing is acked past a failure)."""

    def __init__(self) -> None:
        self.tail: asyncio.Future[None] | None = None  # the latest step

    def then(self, step: Callable[[], Awaitable[None]]) -> asyncio.Future[None]:
        previous = self.tail

        async def run() -> None:
            if previous is not None:
                await previous
            await step()

        self.tail = asyncio.ensure_future(run())
        return self.tail


async def flush_with_retry(
    loop: asyncio.AbstractEventLoop,
    io: ThreadPoolExecutor,
    writer: BatchingWriter,
    fatal: Callable[[str], Awaitable[None]],
) -> int:
    """Write the batch, retrying while ClickHouse is down: the partition waits (and its
    offsets stay uncommitted) instead of the worker crashing or dropping rows. Rows it
    refuses are set aside by the writer; a configuration error stops the worker
    (``fatal``), as retrying cannot help."""
    delay = 0.5
    while True:
        try:
            return await loop.run_in_executor(io, writer.flush)
        except SinkFatal as e:
            await fatal(f"ClickHouse refused the worker's writes: {e}")
        except Exception as e:  # any other error: the rows stay buffered for the retry
            log.error("ClickHouse write failed (%s); retrying in %.1fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def build_app(
    settings: Settings,
    sink: Sink,
    stop: Callable[[], Any] | None = None,
    emitter: Emitter | None = None,
) -> Worker:
    """The worker: its Faust app around a Processor, writing to ``sink``. ``stop``: how a
    fatal ClickHouse error stops the worker (default: stop the app); the command line
    stops the whole process, as a SIGTERM does. ``emitter``: where the records it produces
    go (default: the app's Kafka producer, ``KafkaEmitter``)."""
    datadir = Path(settings.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    store_url, store_options = faust_store(settings.store)
    app = BatchApp(
        settings.app_id,
        broker=settings.broker,
        store=store_url,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        # The till's page (agents/web.py) and Faust's router; not the debug pages that
        # dump tables and graphs.
        web_enabled=True,
        web_port=settings.web_port,
        **({"web_host": settings.web_host} if settings.web_host else {}),
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        table_standby_replicas=settings.standbys,
        broker_max_poll_records=settings.batch_max,
        broker_credentials=faust_credentials(settings),  # TLS / SASL (touchstream.security)
        **(
            {"producer_max_batch_size": settings.producer_max_batch_size}
            if settings.producer_max_batch_size
            else {}
        ),
    )
    source = app.topic(
        settings.input_topic,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    dlq = _raw_topic(app, settings.dlq_topic, settings.partitions)
    # Values are our own compact encoding (agents.records.Stored). use_partitioner: the
    # changelog partition follows the key, like the input topic, not the current event.
    customers = app.Table(
        "customers",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # bytes -> the "raw" codec: the same key bytes as the input topic
        value_type=bytes,
        use_partitioner=True,
        options=store_options,
    )
    alerts = _raw_topic(app, settings.alerts_topic, settings.partitions)
    transitions = _raw_topic(app, settings.transitions_topic, settings.partitions)
    outputs = {
        "dead_letters": dlq.get_topic_name(),
        "transitions": transitions.get_topic_name(),
        "alerts": alerts.get_topic_name(),
    }
    changelog = customers.changelog_topic.get_topic_name()
    if emitter is None:
        emitter = KafkaEmitter(app)
    processor = Processor(
        rules_of(settings),
        settings.partitions,
        model=_load_model(sink),
        max_future_skew_ms=int(settings.max_future_skew_s * 1000),
    )
    metrics = Metrics(settings.health_clickhouse_failing_s)
    writer = BatchingWriter(sink, on_insert=metrics.insert)
    worker: Worker  # set below; the closures read it
    # One thread owns the ClickHouse connection, so a slow insert never blocks the loop.
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
    # The agent's batches and the live clock's ticks both read and write customers.
    lock = asyncio.Lock()
    totals = Totals()

    # The table's store, written by the batch path without Faust's changelog send; states
    # are stored once their effects are done (agents/state.py).
    state = TableState(customers)

    def load(cid: str) -> bytes | None:
        return state.get(cid.encode())

    scan = state.scan

    # Batches reach ClickHouse, the topics and the changelog in order (``effects_in_order``); a
    # batch's output records only wait for the previous batch's (``sending``).
    effects_in_order, sending = InOrder(), InOrder()

    def send_outputs(result: BatchResult) -> asyncio.Future[None]:
        """Send the batch's dead letters, transitions and alerts now, behind only the
        previous batch's output records (so each topic partition keeps batch order), not
        behind its ClickHouse insert: an alert reaches its readers one batch sooner."""

        async def send() -> None:
            await asyncio.gather(
                *(
                    emitter.send(topic, [(None, k, v) for k, v in getattr(result, name)])
                    for name, topic in outputs.items()
                )
            )

        sent = sending.then(send)
        # A failure surfaces through the effects chain that awaits it (the worker stops);
        # this only keeps asyncio from reporting it a second time as never retrieved.
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())
        return sent

    unwritten: dict[str, list[Any]] = {}  # rows of processed batches, not yet in the writer

    def apply(result: BatchResult) -> asyncio.Future[None]:
        """The batch's states go into the store now (the next batch reads them); its
        effects go out in the background, in the order that makes a replay safe (module
        doc), while the next batch is processed. The returned future is done when all of
        them reached ClickHouse and the broker: then the batch's offsets may be acked."""
        records, states = [], {}
        for cid, value in result.states.items():
            key = cid.encode()
            # The changelog partition is the customer's input partition (murmur2 of the key).
            partition = Stored.partition_of(value)
            state.stage(key, value, partition)
            states[key] = value
            records.append((partition, key, value))

        for table, rows in result.rows.items():
            if rows:
                unwritten.setdefault(table, []).extend(rows)

        async def write_rows() -> None:
            # Every batch processed by now goes in this insert: this one's rows and those
            # of batches processed while the previous insert ran. So inserts (and parts)
            # grow with the load instead of multiplying, and cost no wait at low load.
            for table, rows in unwritten.items():
                writer.add(table, rows)
            unwritten.clear()
            if writer.pending:
                totals.rows += await flush_with_retry(asyncio.get_running_loop(), io, writer, fatal)
                totals.rows_refused = writer.rows_refused

        sent = send_outputs(result)

        async def effects() -> None:
            # ClickHouse and the output topics at once (a replay rewrites the same rows and
            # re-sends the same alert_ids), the changelog only after both: once the table
            # has the batch, a replay skips it.
            await asyncio.gather(write_rows(), sent)
            state.persist(states, await emitter.send(changelog, records))
            totals.add(result)
            metrics.effects_done(result.rows)

        return effects_in_order.then(effects)

    in_flight: deque[asyncio.Future[None]] = deque()  # effects of the latest batches
    started = time.monotonic()
    last_message: dict[int, float] = {}  # partition -> when it last had a message (monotonic)

    async def handle(
        messages: Any, current: Callable[[], bool] = lambda: True
    ) -> asyncio.Future[None] | None:
        handed, now = time.perf_counter(), time.monotonic()
        seen = {m.partition for m in messages}
        for p in seen:
            last_message[p] = now
        async with lock:
            if not current():
                # A rebalance began while this batch waited for the lock (the revocation
                # holds it): its partitions may be another worker's now.
                return None
            state.open(seen)
            began = time.perf_counter()
            batch = processor.begin(load, datetime.now(UTC))
            for i in range(0, len(messages), YIELD_EVERY):
                if i:
                    await asyncio.sleep(0)  # the till's requests and the timers get a turn
                for m in messages[i : i + YIELD_EVERY]:
                    batch.message(m)
            done = apply(processor.end(batch, seen, scan))
            metrics.batch_processed(time.perf_counter() - began)

        def completed(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None:
                metrics.batch_done(time.perf_counter() - handed)

        done.add_done_callback(completed)
        in_flight.append(done)
        # Up to EFFECTS_IN_FLIGHT batches' effects go out behind the one being processed:
        # enough to keep processing busy through a ClickHouse insert and the changelog
        # send after it, and bounded, so a slow ClickHouse slows the consumer down.
        while len(in_flight) > EFFECTS_IN_FLIGHT or (in_flight and in_flight[0].done()):
            await in_flight.popleft()
        return done

    app.fetch_max_wait_ms = settings.fetch_max_wait_ms
    # The fast path: the consumer hands over each fetch as one batch (agents/consumer.py)
    # and acks it when the returned future is done.
    app.batch_handlers[settings.input_topic] = handle

    # The same batches through Faust's own stream: what runs where the batch consumer does
    # not (Faust's test context, another transport). It also subscribes the input topic.
    @app.agent(source, name="touchpoints")
    async def process(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            done = await handle([e.message for e in events])
            if done is not None:
                await done

    if settings.clock == "live":

        @app.timer(interval=settings.tick_s)
        async def tick() -> None:
            # Quiet partitions send no events: the wall clock, less the allowed lateness,
            # fires their deadlines. Bound: lateness_s + tick_s after the deadline.
            now = datetime.now(UTC)
            assigned = {
                tp.partition
                for tp in app.assignor.assigned_actives()
                if tp.topic == settings.input_topic
            }
            async with lock:
                done = apply(
                    processor.process(
                        [], load, now, scan, wall_ms=epoch_ms(now), partitions=assigned
                    )
                )
            await done

    def cluster_stream_time() -> int:
        """The latest stream time any worker has written (stream_clock), epoch ms."""
        _, rows = sink.query(f"SELECT toUInt64(max(stream_time)) FROM {sink.database}.stream_clock")
        return int(rows[0][0] or 0) * 1000 if rows else 0

    if settings.clock == "event" and settings.idle_s > 0:

        @app.timer(interval=min(settings.tick_s, settings.idle_s))
        async def advance_idle() -> None:
            # A partition that has had no message for idle_s while the stream moved on
            # elsewhere (a quiet partition, or the end of a replay) is advanced to the
            # latest stream time of the others, less the lateness, as Flink does for idle
            # sources: its customers' deadlines fire as if its events had kept coming.
            now = time.monotonic()
            assigned = {
                tp.partition
                for tp in app.assignor.assigned_actives()
                if tp.topic == settings.input_topic
            }
            idle = [p for p in assigned if now - last_message.get(p, started) >= settings.idle_s]
            if not idle:
                return
            try:
                latest = await asyncio.get_running_loop().run_in_executor(io, cluster_stream_time)
            except Exception as e:  # ClickHouse away: this worker's own partitions still count
                log.warning("stream time of the other workers unavailable (%s)", e)
                latest = 0
            latest = max(latest, *processor.stream_time.values(), 0)
            mark = latest - processor.lateness_ms
            marks = {
                p: mark
                for p in idle
                if processor.watermark.get(p, 0) < mark
                and processor.stream_time.get(p, 0) - processor.lateness_ms < mark
            }
            if not marks:
                return
            log.info(
                "partitions %s idle for %.0fs: advanced to %s",
                sorted(marks),
                settings.idle_s,
                datetime.fromtimestamp(mark / 1000, UTC).isoformat(),
            )
            async with lock:
                done = apply(processor.process([], load, datetime.now(UTC), scan, watermarks=marks))
            await done

    # Each worker publishes its partitions' RFM sketches to ClickHouse (rfm_sketches, one
    # row per partition, the newest wins) and merges every partition's latest sketch, so the
    # cut-offs cover the whole population however the partitions are spread over workers.
    # (A Faust GlobalTable did not deliver other workers' updates on the local broker.)
    def merged_population() -> RfmSketches:
        db = sink.database
        _, rows = sink.query(
            f"SELECT partition, argMax(sketch, version) FROM {db}.rfm_sketches GROUP BY partition"
        )
        return RfmSketches().merge(*(RfmSketches.from_record(orjson.loads(r[1])) for r in rows))

    @app.timer(interval=settings.cutoff_interval_s)
    async def publish_cutoffs() -> None:
        async with lock:
            if not processor.sketches:
                return
            published = datetime.now(UTC)
            sketches = [sketch_row(p, sk, published) for p, sk in processor.sketches.items()]
            stream_time = dict(processor.stream_time)

        async def publish() -> None:  # in the effects chain: the writer is used in order
            loop = asyncio.get_running_loop()
            writer.add("rfm_sketches", sketches)
            totals.rows += await flush_with_retry(loop, io, writer, fatal)
            try:
                population = await loop.run_in_executor(io, merged_population)
            except Exception as e:  # a failed step would fail every batch after it
                err = classify(e)
                if isinstance(err, SinkFatal):
                    await fatal(f"ClickHouse refused the worker's query: {err}")
                log.warning("RFM cut-offs not published this time: %s", err)
                return
            row = cutoffs_row_for(population, stream_time, settings)
            if row is not None:
                writer.add("rfm_cutoffs", [row])
                totals.rows += await flush_with_retry(loop, io, writer, fatal)

        await effects_in_order.then(publish)

    # The churn model: every worker scores with the latest chosen version in model_params
    # (loaded at start, polled); the worker that owns input partition 0 fits a new one
    # when the latest is older than fit_interval_s (docs/churn-probability.md).
    @app.timer(interval=settings.model_poll_s)
    async def poll_model() -> None:
        loop = asyncio.get_running_loop()
        current = processor.model.version if processor.model is not None else 0
        try:
            latest = await loop.run_in_executor(io, latest_version, sink)
            if latest <= current:
                return
            model = await loop.run_in_executor(io, load_chosen, sink)
        except Exception as e:  # ClickHouse away: keep scoring with the model we have
            log.warning("churn model: cannot look for a new version (%s)", e)
            return
        if model is not None:
            async with lock:  # between batches
                processor.model = model
            log.info("churn model: version %d (%s) loaded", model.version, model.purchases.name)

    if settings.fit_interval_s > 0:

        @app.timer(interval=min(settings.fit_interval_s, 60.0))
        async def scheduled_fit() -> None:
            owns_first = any(
                tp.topic == settings.input_topic and tp.partition == 0
                for tp in app.assignor.assigned_actives()
            )
            if not owns_first:
                return
            loop = asyncio.get_running_loop()
            try:
                latest = await loop.run_in_executor(io, latest_version, sink)
            except Exception as e:
                log.warning("churn model: cannot read model_params (%s)", e)
                return
            if time.time() * 1000 - latest < settings.fit_interval_s * 1000:
                return
            await run_fit(settings, loop, io, sink)
            await poll_model()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types receivers as sync
    async def on_revoked(sender: Any, revoked: Any, **_: Any) -> None:
        async with lock:  # a batch in flight finishes (and is acked) first
            if effects_in_order.tail is not None:
                await asyncio.wait([effects_in_order.tail])
            gone = {tp.partition for tp in revoked if tp.topic == settings.input_topic}
            processor.forget(gone)
            state.forget(gone)

    add_customer_page(
        app,
        customers,
        state.get,
        lambda: max(processor.stream_time.values(), default=0),
        settings.quick_resolution_days,
    )

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("totals %s", totals)

    async def fatal(reason: str) -> None:
        """Stop the worker, saying why in one line; nothing more is written or acked."""
        if worker.stopped_because is None:
            worker.stopped_because = reason
            log.critical("%s; the worker stops: fix that and start it again", reason)
            if stop is not None:
                stop()
            else:
                asyncio.ensure_future(app.stop())
        await asyncio.Future()  # never done: the stop cancels it

    worker = Worker(app, process, customers, outputs, totals, emitter, metrics=metrics)
    metrics.watch(
        app, settings.input_topic, totals, processor, writer, lambda: worker.stopped_because
    )
    add_ops_pages(app, metrics)
    return worker


def _load_model(sink: Sink) -> Model | None:
    try:
        return load_chosen(sink)
    except Exception as e:  # no table yet, or ClickHouse away: the poll tries again
        log.warning("churn model: none loaded at start (%s)", e)
        return None


async def run_fit(
    settings: Settings, loop: asyncio.AbstractEventLoop, io: ThreadPoolExecutor, sink: Sink
) -> None:
    """``touchstream fit`` in a child process (its own connection, its own core, and a
    failure cannot stop the worker); with embedded chdb, which one process at a time may
    open, in the ClickHouse thread (the writes wait for it)."""
    if settings.clickhouse_url.startswith("chdb://"):
        try:
            fitted = await loop.run_in_executor(io, model_store.fit, sink)
            log.info("churn model: fitted version %d", fitted.version)
        except Exception as e:  # a fit that fails leaves the current model in place
            log.warning("churn model: fit failed (%s)", e)
        return
    env = {**os.environ, "TOUCHSTREAM_CLICKHOUSE_URL": settings.clickhouse_url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "touchstream.cli",
        "fit",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    lines = out.decode(errors="replace").strip().splitlines()
    if proc.returncode:
        log.warning("churn model: fit failed: %s", lines[-1] if lines else proc.returncode)
    else:
        log.info("churn model: %s", lines[-1] if lines else "fitted")


def rules_of(settings: Settings) -> Rules:
    """The domain rules the settings choose."""
    return Rules(
        allowed_lateness_ms=int(settings.lateness_s * 1000),
        quick_resolution_days=settings.quick_resolution_days,
        unresolved_after_days=settings.unresolved_after_days,
    )


def _raw_topic(app: faust.App, name: str, partitions: int) -> Any:
    return app.topic(
        name,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
