"""The Faust app: a thin loop around agents.pipeline.Processor.

Per batch of up to ``batch_max`` messages (``take_events``: offsets are acked only after
the loop body finished), in this order, for at-least-once with idempotent effects:
1. decode, validate and fold events into per-customer state (pure);
2. write events, states, dead letters and stream time to ClickHouse (versioned rows);
3. put each changed customer's state into the table once (changelogged);
4. send dead letters to the dead-letter topic.
A crash anywhere before the offsets are committed replays the batch: rows are rewritten
with the same keys and versions, and the table's stored offsets skip what was applied.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust

from agents.pipeline import Processor, RawMessage
from sinks import BatchingWriter, Sink
from touchstream.config import Settings

log = logging.getLogger("touchstream.worker")


@dataclass
class Totals:
    batches: int = 0
    accepted: int = 0
    duplicates: int = 0
    redelivered: int = 0
    rejected: int = 0
    rows: int = 0


@dataclass
class Worker:
    app: faust.App
    agent: Any
    table: Any
    dlq: Any
    totals: Totals


async def flush_with_retry(
    loop: asyncio.AbstractEventLoop, io: ThreadPoolExecutor, writer: BatchingWriter
) -> int:
    """Write the batch, retrying while ClickHouse is down: the partition waits (and its
    offsets stay uncommitted) instead of the worker crashing or dropping rows."""
    delay = 0.5
    while True:
        try:
            return await loop.run_in_executor(io, writer.flush)
        except Exception as e:  # any driver error: the rows stay buffered for the retry
            log.error("ClickHouse write failed (%s); retrying in %.1fs", e, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def build_app(settings: Settings, sink: Sink) -> Worker:
    datadir = Path(settings.data_dir) / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        store="memory://",
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 3),
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        table_standby_replicas=0,
    )
    source = app.topic(
        settings.input_topic,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    dlq = app.topic(
        settings.dlq_topic,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    # Values are our own compact encoding (agents.pipeline.Stored). use_partitioner: the
    # changelog partition follows the key, like the input topic, not the current event.
    customers = app.Table(
        "customers",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # bytes -> the "raw" codec: the same key bytes as the input topic
        value_type=bytes,
        use_partitioner=True,
    )
    processor = Processor()
    writer = BatchingWriter(sink)
    # One thread owns the ClickHouse connection, so a slow insert never blocks the loop.
    io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
    totals = Totals()

    @app.agent(source, name="touchpoints")
    async def process(stream: Any) -> None:
        loop = asyncio.get_running_loop()
        async for events in stream.take_events(settings.batch_max, within=settings.batch_within_s):
            msgs = [
                RawMessage(
                    e.message.topic,
                    e.message.partition,
                    e.message.offset,
                    e.message.key,
                    e.message.value,
                )
                for e in events
            ]
            result = processor.process(
                msgs, lambda cid: customers.get(cid.encode()), datetime.now(UTC)
            )
            for table, rows in result.rows.items():
                writer.add(table, rows)
            totals.rows += await flush_with_retry(loop, io, writer)
            for cid, value in result.states.items():
                customers[cid.encode()] = value
            for key, envelope in result.dead_letters:
                await dlq.send(key=key, value=envelope)
            totals.batches += 1
            totals.accepted += result.accepted
            totals.duplicates += result.duplicates
            totals.redelivered += result.redelivered
            totals.rejected += result.rejected

    @app.timer(interval=10.0)
    async def report() -> None:
        log.info("totals %s", totals)

    return Worker(app, process, customers, dlq, totals)
