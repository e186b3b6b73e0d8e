"""How touchstream uses Faust without paying for Faust's per-message path.

Faust hands every consumed record to its streams one at a time: a Message object, a
conductor callback awaited under ``wait_first`` (two asyncio tasks per record), an Event,
a queue put, the stream iterator, an ack. Measured here that is most of a plain Faust
agent's 500+ µs per event. touchstream processes whole batches, so for its input topic it
takes the records as the consumer fetched them instead:

- ``BatchConsumer.getmany`` hands each fetch's records of a *batch topic* to a handler
  in one call (per fetch, all partitions at once) and acks their offsets in bulk when the
  future the handler returned is done (its effects reached ClickHouse and the broker),
  through Faust's own ack bookkeeping, so Faust's commit logic, gaps and
  rebalances work as before. Records of every other topic (table changelogs during
  recovery) still take Faust's normal path.
- ``KafkaEmitter`` sends many records with the producer's batch API and waits for their
  delivery, instead of one ``send`` (a future, a buffer, a task hop) per record.

Everything else stays Faust: the app, group membership and the partition assignor, the
table (store, changelog topic, recovery), timers, commits.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from agents.pipeline import key_partition

# Gets a fetch's records (aiokafka ConsumerRecords: topic, partition, offset, key, value)
# and returns a future that is done when their effects are; then they are acked.
BatchHandler = Callable[[Sequence[Any]], Awaitable[asyncio.Future[None]]]


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust fixes the fetch wait at 1.5 s. A broker that holds a fetch that long even
        # when some partitions have data (seen on Tansu: batches every 1.4 s at 1,000
        # events/s) adds it to every event's latency; set before the consumer starts.
        wait = getattr(self.app, "fetch_max_wait_ms", None)
        if wait is not None:
            consumer._fetch_max_wait_ms = wait
        return consumer


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with batch delivery for the topics in
    ``app.batch_handlers``."""

    def _new_consumer_thread(self) -> Any:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def getmany(self, timeout: float) -> Any:  # an async generator, like the base
        handlers: dict[str, BatchHandler] = getattr(self.app, "batch_handlers", {})
        if not handlers:
            async for item in super().getmany(timeout):
                yield item
            return
        records, active = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            # Rebalancing: as the base class, go back to the committed offsets.
            await self.perform_seek()
            return
        generation = self.app.consumer_generation_id
        batches: dict[str, list[Any]] = {}
        others = []
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic in handlers:
                await self._track(tp, recs)
                batches.setdefault(tp.topic, []).extend(recs)
            else:
                others.append((tp, recs))
        for topic, batch in batches.items():
            if self.app.consumer_generation_id != generation:
                return  # revoked meanwhile: the new owner reads from the committed offset
            done = await handlers[topic](batch)
            done.add_done_callback(functools.partial(self._ack_when_done, batch))
        to_message = self._to_message
        for tp, recs in others:
            for rec in recs:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                yield tp, to_message(tp, rec)

    async def _track(self, tp: Any, recs: Sequence[Any]) -> None:
        """What the base drain loop does per message: the read offset, and gaps (offsets
        a compacted or transactional topic skips) so that commits can pass them."""
        prev = self._read_offset[tp]
        for rec in recs:
            if prev is not None and rec.offset - prev > 1:
                await self._add_gap(tp, prev + 1, rec.offset - 1)
            prev = rec.offset
        self._read_offset[tp] = prev

    def _ack_when_done(self, batch: Sequence[Any], done: asyncio.Future[None]) -> None:
        # A failed batch stays unacked: the handler raises it with the next batch.
        if not done.cancelled() and done.exception() is None:
            self._ack_all(batch)

    def _ack_all(self, batch: Sequence[Any]) -> None:
        """``Consumer.ack`` for a whole batch: offsets into the acked lists the committer
        reads."""
        by_tp: dict[Any, list[int]] = {}
        for rec in batch:
            by_tp.setdefault(TP(rec.topic, rec.partition), []).append(rec.offset)
        for tp, offsets in by_tp.items():
            committed = self._committed_offset[tp]
            if committed is not None:
                offsets = [o for o in offsets if o >= committed]
            index = self._acked_index[tp]
            fresh = [o for o in offsets if o not in index]
            index.update(fresh)
            self._acked[tp].extend(fresh)
            self._n_acked += len(fresh)


class BatchTransport(faust_aiokafka.Transport):
    Consumer = BatchConsumer


class BatchApp(faust.App):
    """A Faust app whose consumer delivers ``batch_handlers``' topics in batches."""

    batch_handlers: dict[str, BatchHandler]
    fetch_max_wait_ms: int | None = None  # None: Faust's 1,500

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_handlers = {}

    def _new_transport(self) -> Any:
        url = self.conf.broker_consumer[0]
        if url.scheme in ("kafka", "aiokafka"):
            return BatchTransport(self.conf.broker_consumer, self)
        return super()._new_transport()


Record = tuple[int | None, bytes | None, bytes]  # (partition or None: by key, key, value)


class KafkaEmitter:
    """Sends records through the app's producer in as few produce batches as possible and
    returns once the broker has them all. A record without a partition goes where Kafka's
    default partitioner (murmur2 of the key) puts it, as Faust and the Java client do."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._partitions: dict[str, int] = {}

    async def _partition_count(self, producer: Any, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            n = self._partitions[topic] = len(await producer.partitions_for(topic))
        return n

    async def send(self, topic: str, records: Sequence[Record]) -> None:
        if not records:
            return
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        n = await self._partition_count(producer, topic)
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for partition, key, value in records:
            if partition is None:
                # Cached per key: alerts and transitions are keyed by customer, and
                # kafka-python's murmur2 is pure Python.
                partition = key_partition(key, n) if key else 0
            by_partition.setdefault(partition, []).append((key, value))
        pending = []
        for partition, kvs in by_partition.items():
            batch = producer.create_batch()
            for key, value in kvs:
                # A full batch (the producer's max_batch_size) goes out; the record opens
                # the next one (the first record of a batch always fits).
                while batch.append(key=key, value=value, timestamp=None) is None:
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*pending)
