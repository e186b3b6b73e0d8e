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
from agents.metrics import (
    FULL_COLLECTION_S,
    Metrics,
    add_ops_pages,
    after_batch,
    full_collection,
)
from agents.processor import INDEX_LIMIT, INDEX_SLICE, Processor, cutoffs_row_for
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


class Worker:
    """One worker: its Faust app around a Processor, writing to a sink and producing through
    an emitter. Made by ``build_app``; every timer, the agent and the revocation handler
    are its methods, and everything they share is an attribute here."""

    def __init__(
        self,
        settings: Settings,
        app: BatchApp,
        sink: Sink,
        stop: Callable[[], Any] | None,
        emitter: Emitter | None,
    ) -> None:
        self.settings, self.app, self.sink, self._stop = settings, app, sink, stop
        self.stopped_because: str | None = None  # a fatal ClickHouse error stopped the worker
        source = app.topic(
            settings.input_topic,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )
        # Values are our own compact encoding (agents.records.Stored). use_partitioner: the
        # changelog partition follows the key, like the input topic, not the current event.
        self.table = app.Table(
            "customers",
            default=None,
            partitions=settings.partitions,
            key_type=bytes,  # bytes -> the "raw" codec: the same key bytes as the input topic
            value_type=bytes,
            use_partitioner=True,
            options=faust_store(settings.store)[1],
        )
        topics = {
            "dead_letters": settings.dlq_topic,
            "transitions": settings.transitions_topic,
            "alerts": settings.alerts_topic,
        }
        self.outputs = {  # BatchResult field -> topic name
            field: _raw_topic(app, name, settings.partitions).get_topic_name()
            for field, name in topics.items()
        }
        self.changelog = self.table.changelog_topic.get_topic_name()
        self.emitter: Emitter = emitter if emitter is not None else KafkaEmitter(app)
        self.processor = Processor(
            rules_of(settings),
            settings.partitions,
            model=_load_model(sink),
            max_future_skew_ms=int(settings.max_future_skew_s * 1000),
            index_slice=INDEX_SLICE,
            index_limit=INDEX_LIMIT,
        )
        self.metrics = Metrics(settings.health_clickhouse_failing_s)
        self.writer = BatchingWriter(sink, on_insert=self.metrics.insert)
        # One thread owns the ClickHouse connection, so a slow insert never blocks the loop.
        self.io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        # The agent's batches and the timers' ticks all read and write customers.
        self.lock = asyncio.Lock()
        self.totals = Totals()
        # The table's store, written by the batch path without Faust's changelog send;
        # states are stored once their effects are done (agents/state.py).
        self.state = TableState(self.table)
        # Batches reach ClickHouse, the topics and the changelog in order (``effects``); a
        # batch's output records only wait for the previous batch's (``sending``).
        self.effects, self.sending = InOrder(), InOrder()
        self.unwritten: dict[str, list[Any]] = {}  # rows of processed batches, not yet written
        self.in_flight: deque[asyncio.Future[None]] = deque()  # effects of the latest batches
        self.started = time.monotonic()
        self.last_insert = 0.0  # monotonic: when the latest batch insert began
        self.last_message: dict[int, float] = {}  # partition -> its last message (monotonic)

        app.fetch_max_wait_ms = settings.fetch_max_wait_ms
        # The fast path: the consumer hands over each fetch as one batch (agents/consumer.py)
        # and acks it when the returned future is done.
        app.batch_handlers[settings.input_topic] = self.handle
        # The same batches through Faust's own stream: what runs where the batch consumer
        # does not (Faust's test context, another transport). It also subscribes the topic.
        self.agent = app.agent(source, name="touchpoints")(self.process)
        if settings.clock == "live":
            app.timer(interval=settings.tick_s)(self.tick)
        if settings.clock == "event" and settings.idle_s > 0:
            app.timer(interval=min(settings.tick_s, settings.idle_s))(self.advance_idle)
        app.timer(interval=0.5)(self.build_indexes)  # about 0.4 s of slices each
        app.timer(interval=settings.cutoff_interval_s)(self.publish_cutoffs)
        app.timer(interval=settings.model_poll_s)(self.poll_model)
        if settings.fit_interval_s > 0:
            app.timer(interval=min(settings.fit_interval_s, 60.0))(self.scheduled_fit)
        app.timer(interval=10.0)(self.report)
        app.timer(interval=FULL_COLLECTION_S)(self.collect)
        app.on_partitions_revoked.connect(self.on_revoked)  # type: ignore[arg-type]
        add_customer_page(
            app,
            self.table,
            self.state.get,
            lambda: max(self.processor.stream_time.values(), default=0),
            settings.quick_resolution_days,
        )
        self.metrics.watch(
            app,
            settings.input_topic,
            self.totals,
            self.processor,
            self.writer,
            lambda: self.stopped_because,
        )
        add_ops_pages(app, self.metrics)

    # -- one batch: process, then its effects in order ------------------------------------

    def load(self, cid: str) -> bytes | None:
        return self.state.get(cid.encode())

    async def handle(
        self, messages: Any, current: Callable[[], bool] = lambda: True
    ) -> asyncio.Future[None] | None:
        """Process a batch; returns the future of its effects (then its offsets may be
        acked), or None when a rebalance took the batch's partitions meanwhile."""
        handed, now = time.perf_counter(), time.monotonic()
        seen = {m.partition for m in messages}
        for p in seen:
            self.last_message[p] = now
        processor, metrics = self.processor, self.metrics
        async with self.lock:
            if not current():
                # A rebalance began while this batch waited for the lock (the revocation
                # holds it): its partitions may be another worker's now.
                return None
            self.state.open(seen)
            began = time.perf_counter()
            batch = processor.begin(self.load, datetime.now(UTC))
            for i in range(0, len(messages), YIELD_EVERY):
                if i:
                    await asyncio.sleep(0)  # the till's requests and the timers get a turn
                for m in messages[i : i + YIELD_EVERY]:
                    batch.message(m)
            done = self.apply(processor.end(batch, seen, self.state.scan))
            metrics.batch_processed(time.perf_counter() - began)
            after_batch()

        def completed(f: asyncio.Future[None]) -> None:
            if not f.cancelled() and f.exception() is None:
                metrics.batch_done(time.perf_counter() - handed)

        done.add_done_callback(completed)
        in_flight = self.in_flight
        in_flight.append(done)
        # Up to EFFECTS_IN_FLIGHT batches' effects go out behind the one being processed:
        # enough to keep processing busy through a ClickHouse insert and the changelog
        # send after it, and bounded, so a slow ClickHouse slows the consumer down.
        while len(in_flight) > EFFECTS_IN_FLIGHT or (in_flight and in_flight[0].done()):
            await in_flight.popleft()
        return done

    async def process(self, stream: Any) -> None:
        """The agent: Faust's stream, in batches, through ``handle``."""
        s = self.settings
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            done = await self.handle([e.message for e in events])
            if done is not None:
                await done

    def apply(self, result: BatchResult) -> asyncio.Future[None]:
        """The batch's states go into the store now (the next batch reads them); its
        effects go out in the background, in the order that makes a replay safe (module
        doc), while the next batch is processed. The returned future is done when all of
        them reached ClickHouse and the broker: then the batch's offsets may be acked."""
        records, states = [], {}
        for cid, value in result.states.items():
            key = cid.encode()
            # The changelog partition is the customer's input partition (murmur2 of the key).
            partition = Stored.partition_of(value)
            self.state.stage(key, value, partition)
            states[key] = value
            records.append((partition, key, value))
        for table, rows in result.rows.items():
            if rows:
                self.unwritten.setdefault(table, []).extend(rows)
        sent = self.send_outputs(result)

        async def effects() -> None:
            # ClickHouse and the output topics at once (a replay rewrites the same rows and
            # re-sends the same alert_ids), the changelog only after both: once the table
            # has the batch, a replay skips it.
            await asyncio.gather(self.write_rows(), sent)
            self.state.persist(states, await self.emitter.send(self.changelog, records))
            self.totals.add(result)
            self.metrics.effects_done(result.rows)

        return self.effects.then(effects)

    def send_outputs(self, result: BatchResult) -> asyncio.Future[None]:
        """Send the batch's dead letters, transitions and alerts now, behind only the
        previous batch's output records (so each topic partition keeps batch order), not
        behind its ClickHouse insert: an alert reaches its readers one batch sooner."""

        async def send() -> None:
            await asyncio.gather(
                *(
                    self.emitter.send(topic, [(None, k, v) for k, v in getattr(result, name)])
                    for name, topic in self.outputs.items()
                )
            )

        sent = self.sending.then(send)
        # A failure surfaces through the effects chain that awaits it (the worker stops);
        # this only keeps asyncio from reporting it a second time as never retrieved.
        sent.add_done_callback(lambda f: f.cancelled() or f.exception())
        return sent

    async def write_rows(self) -> None:
        # Every batch processed by now goes in this insert: this one's rows and those of
        # batches processed while the previous insert ran. So inserts (and parts) grow with
        # the load instead of multiplying, and cost no wait at low load.
        wait = self.settings.min_insert_interval_s - (time.monotonic() - self.last_insert)
        if wait > 0 and self.unwritten:
            await asyncio.sleep(wait)  # the batches processed meanwhile join this insert
        for table, rows in self.unwritten.items():
            self.writer.add(table, rows)
        self.unwritten.clear()
        if self.writer.pending:
            self.last_insert = time.monotonic()
            await self.flush()

    async def flush(self) -> None:
        loop = asyncio.get_running_loop()
        self.totals.rows += await flush_with_retry(loop, self.io, self.writer, self.fatal)
        self.totals.rows_refused = self.writer.rows_refused

    # -- stream time without events ---------------------------------------------------------

    def assigned(self) -> set[int]:
        """The input partitions this worker holds now."""
        topic = self.settings.input_topic
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic}

    async def tick(self) -> None:
        """TOUCHSTREAM_CLOCK=live: quiet partitions send no events, so the wall clock, less
        the allowed lateness, fires their deadlines. Bound: lateness_s + tick_s late."""
        now = datetime.now(UTC)
        async with self.lock:
            result = self.processor.process(
                [],
                self.load,
                now,
                self.state.scan,
                wall_ms=epoch_ms(now),
                partitions=self.assigned(),
            )
            done = self.apply(result)
        await done

    def cluster_stream_time(self) -> int:
        """The latest stream time any worker has written (stream_clock), epoch ms."""
        db = self.sink.database
        _, rows = self.sink.query(f"SELECT toUInt64(max(stream_time)) FROM {db}.stream_clock")
        return int(rows[0][0] or 0) * 1000 if rows else 0

    async def advance_idle(self) -> None:
        """A partition that has had no message for idle_s while the stream moved on
        elsewhere (a quiet partition, or the end of a replay) is advanced to the latest
        stream time of the others, less the lateness, as Flink does for idle sources: its
        customers' deadlines fire as if its events had kept coming."""
        now, idle_s, processor = time.monotonic(), self.settings.idle_s, self.processor
        idle = [
            p for p in self.assigned() if now - self.last_message.get(p, self.started) >= idle_s
        ]
        if not idle:
            return
        try:
            loop = asyncio.get_running_loop()
            latest = await loop.run_in_executor(self.io, self.cluster_stream_time)
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
            idle_s,
            datetime.fromtimestamp(mark / 1000, UTC).isoformat(),
        )
        async with self.lock:
            result = processor.process(
                [], self.load, datetime.now(UTC), self.state.scan, watermarks=marks
            )
            done = self.apply(result)
        await done

    async def build_indexes(self) -> None:
        """Deadline indexes of newly assigned partitions, a slice at a time between
        batches; a partition whose index is whole fires the deadlines already due."""
        processor, live = self.processor, self.settings.clock == "live"
        # Under the timer's interval, so Faust's timer never runs late ("overlapping"):
        # the next tick goes on where this one stopped.
        until = time.monotonic() + 0.4
        while processor.building and time.monotonic() < until:
            async with self.lock:
                whole = processor.build_indexes()
                done = None
                if whole:
                    now = datetime.now(UTC)
                    result = processor.process(
                        [],
                        self.load,
                        now,
                        self.state.scan,
                        wall_ms=epoch_ms(now) if live else None,
                        partitions=whole,
                    )
                    done = self.apply(result)
            if done is not None:
                await done
            else:
                await asyncio.sleep(0)  # batches, the till and the timers get a turn

    # -- RFM cut-offs over every worker's partitions ------------------------------------------

    def merged_population(self) -> RfmSketches:
        """Every partition's latest RFM sketch (rfm_sketches, one row per partition, the
        newest wins), merged: the cut-offs cover the whole population however the
        partitions are spread over workers. (A Faust GlobalTable did not deliver other
        workers' updates on the local broker.)"""
        db = self.sink.database
        _, rows = self.sink.query(
            f"SELECT partition, argMax(sketch, version) FROM {db}.rfm_sketches GROUP BY partition"
        )
        return RfmSketches().merge(*(RfmSketches.from_record(orjson.loads(r[1])) for r in rows))

    async def publish_cutoffs(self) -> None:
        processor = self.processor
        async with self.lock:
            if not processor.sketches or processor.building:
                return  # a partition still being indexed would count only part of it
            published = datetime.now(UTC)
            sketches = [sketch_row(p, sk, published) for p, sk in processor.sketches.items()]
            stream_time = dict(processor.stream_time)

        async def publish() -> None:  # in the effects chain: the writer is used in order
            self.writer.add("rfm_sketches", sketches)
            await self.flush()
            try:
                loop = asyncio.get_running_loop()
                population = await loop.run_in_executor(self.io, self.merged_population)
            except Exception as e:  # a failed step would fail every batch after it
                err = classify(e)
                if isinstance(err, SinkFatal):
                    await self.fatal(f"ClickHouse refused the worker's query: {err}")
                log.warning("RFM cut-offs not published this time: %s", err)
                return
            row = cutoffs_row_for(population, stream_time, self.settings)
            if row is not None:
                self.writer.add("rfm_cutoffs", [row])
                await self.flush()

        await self.effects.then(publish)

    # -- the churn model ----------------------------------------------------------------------
    # Every worker scores with the latest chosen version in model_params (loaded at start,
    # polled); the worker that owns input partition 0 fits a new one when the latest is
    # older than fit_interval_s (docs/churn-probability.md).

    async def poll_model(self) -> None:
        loop, processor = asyncio.get_running_loop(), self.processor
        current = processor.model.version if processor.model is not None else 0
        try:
            latest = await loop.run_in_executor(self.io, latest_version, self.sink)
            if latest <= current:
                return
            model = await loop.run_in_executor(self.io, load_chosen, self.sink)
        except Exception as e:  # ClickHouse away: keep scoring with the model we have
            log.warning("churn model: cannot look for a new version (%s)", e)
            return
        if model is not None:
            async with self.lock:  # between batches
                processor.model = model
            log.info("churn model: version %d (%s) loaded", model.version, model.purchases.name)

    async def scheduled_fit(self) -> None:
        if 0 not in self.assigned():
            return
        loop = asyncio.get_running_loop()
        try:
            latest = await loop.run_in_executor(self.io, latest_version, self.sink)
        except Exception as e:
            log.warning("churn model: cannot read model_params (%s)", e)
            return
        if time.time() * 1000 - latest < self.settings.fit_interval_s * 1000:
            return
        await run_fit(self.settings, loop, self.io, self.sink)
        await self.poll_model()

    # -- rebalances, reports, stops -------------------------------------------------------------

    async def on_revoked(self, sender: Any, revoked: Any, **_: Any) -> None:
        async with self.lock:  # a batch in flight finishes (and is acked) first
            if self.effects.tail is not None:
                await asyncio.wait([self.effects.tail])
            gone = {tp.partition for tp in revoked if tp.topic == self.settings.input_topic}
            self.processor.forget(gone)
            self.state.forget(gone)

    async def collect(self) -> None:
        async with self.lock:  # between batches
            full_collection()

    async def report(self) -> None:
        log.info("totals %s", self.totals)

    async def fatal(self, reason: str) -> None:
        """Stop the worker, saying why in one line; nothing more is written or acked."""
        if self.stopped_because is None:
            self.stopped_because = reason
            log.critical("%s; the worker stops: fix that and start it again", reason)
            if self._stop is not None:
                self._stop()
            else:
                self._stopping = asyncio.ensure_future(self.app.stop())  # kept: not collected
        await asyncio.Future()  # never done: the stop cancels it


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
    store_url, _ = faust_store(settings.store)
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
            {"consumer_group_instance_id": settings.group_instance_id}
            if settings.group_instance_id
            else {}
        ),
        **(
            {"producer_max_batch_size": settings.producer_max_batch_size}
            if settings.producer_max_batch_size
            else {}
        ),
    )
    return Worker(settings, app, sink, stop, emitter)


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
