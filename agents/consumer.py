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
- Rebalances: records fetched in one generation are handled and acked only in that
  generation, with the flow running. A rebalance restarts every partition from its
  committed offset (aiokafka makes a new assignment, positions included, each time), so
  records dropped while one is under way are read again. Each partition is then taken in
  order from the offset its seek set: nothing before the seek (the consumer thread may
  still hand over records fetched under the previous assignment), and a fetch that starts
  past the next offset is sought back to it, because the state skips what it has seen
  later records of (a gap is taken only if the fetch after that seek starts at the same
  offset again: a fetch the consumer thread made before a seek can arrive after it).
  Records of a partition Faust has paused (its table is still recovering) are dropped
  and the partition is sought back to them.
- ``KafkaEmitter`` sends many records with the producer's batch API and waits for their
  delivery, instead of one ``send`` (a future, a buffer, a task hop) per record.

Everything else stays Faust: the app, group membership and the partition assignor, the
table (store, changelog topic, recovery), timers, commits.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import faust
from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from agents.records import key_partition

log = logging.getLogger("touchstream.consumer")

# Gets a fetch's records (aiokafka ConsumerRecords: topic, partition, offset, key, value)
# and ``current``, true while they may still be processed (call it once the handler holds
# whatever a rebalance waits for); returns a future that is done when their effects are,
# then they are acked, or None if it dropped them because ``current()`` was false.
BatchHandler = Callable[[Sequence[Any], Callable[[], bool]], Awaitable[asyncio.Future[None] | None]]


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


_UNSOUGHT: Any = object()


class BatchConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with batch delivery for the topics in
    ``app.batch_handlers``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Per batch-topic partition of this generation: the next offset to take (None: the
        # first record fetched), set once the partition is sought to its committed offset.
        self._next_offset: dict[Any, int | None] = {}
        # Per partition: (the next offset it was sought back to, the first offset of the
        # fetch that ran past it), so a gap is taken only when a fetch after the seek
        # starts at that same offset again.
        self._sought_back: dict[Any, tuple[int, int]] = {}

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
        generation = self.app.consumer_generation_id

        def current() -> bool:
            return self.flow_active and self.app.consumer_generation_id == generation

        if not current():
            # A rebalance is under way: its new assignment starts each partition at its
            # committed offset, so these records are read again. No seek here (Faust's
            # getmany seeks back): one racing the rebalance failed on a partition no
            # longer assigned, and its late bookkeeping pinned the committed offset of a
            # partition that came back below where its data was acked.
            return
        batches: dict[str, list[Any]] = {}
        others, back = [], []
        expected = self._next_offset
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                if tp.topic in handlers and recs:
                    # Paused since the fetch (its table recovers): dropped, so read it again
                    # from here, or its next records would be acked past them.
                    back.append((tp, recs[0].offset, None))
                continue
            if tp.topic not in handlers:
                others.append((tp, recs))
                continue
            nxt = expected.get(tp, _UNSOUGHT)
            if nxt is _UNSOUGHT:
                # Assigned, not yet sought to its committed offset: whatever this is (even
                # records the consumer thread fetched under the previous assignment), the
                # seek reads it again.
                continue
            if nxt is not None:
                if recs and recs[0].offset < nxt:
                    recs = [r for r in recs if r.offset >= nxt]
                ahead = bool(recs) and recs[0].offset > nxt
                if ahead and self._sought_back.get(tp) != (nxt, recs[0].offset):
                    # Records between were dropped (around a rebalance): taking these would
                    # run ahead of them, and the state would then skip them as applied.
                    # Read from where this generation stands; a real gap (a transaction
                    # marker) comes back the same, from the same first offset, and is
                    # taken then. Not any fetch after a seek back: one the consumer thread
                    # made before the seek can still arrive after it.
                    back.append((tp, nxt, recs[0].offset))
                    continue
            if recs:
                expected[tp] = recs[-1].offset + 1
                batches.setdefault(tp.topic, []).extend(recs)
        for tp, offset, first in back:
            await self._seek_back(tp, offset, current, first)
        for topic, batch in batches.items():
            if not current():
                return
            self._track(batch)
            done = await handlers[topic](batch, current)
            if done is not None:
                done.add_done_callback(functools.partial(self._ack_when_done, batch, current))
        to_message = self._to_message
        for tp, recs in others:
            for rec in recs:
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                yield tp, to_message(tp, rec)

    def _track(self, batch: Sequence[Any]) -> None:
        """What the base drain loop does per message: the read offset, and gaps (offsets
        a compacted or transactional topic skips) so that commits can pass them. No await
        inside: the bookkeeping belongs to the generation just checked."""
        prev: dict[Any, int | None] = {}
        for rec in batch:
            tp = TP(rec.topic, rec.partition)
            last = prev[tp] if tp in prev else self._read_offset[tp]
            if last is not None and rec.offset - last > 1:
                self._gap_sync(tp, last + 1, rec.offset - 1)
            prev[tp] = rec.offset
        self._read_offset.update(prev)

    def _gap_sync(self, tp: Any, offset_from: int, offset_to: int) -> None:
        """``Consumer._add_gap`` without its ``sleep(0)``."""
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed + 1)
        if offset_from <= offset_to:
            gaps = self._gap[tp]
            gaps.addi(offset_from, offset_to + 1)
            gaps.merge_overlaps()

    async def _seek_back(
        self, tp: Any, offset: int, current: Callable[[], bool], first: int | None = None
    ) -> None:
        """Read ``tp`` again from ``offset``; ``first``: where the fetch that ran past it
        started (None: records dropped while paused)."""
        if not current():
            return  # a rebalance restarts the partition anyway
        self._sought_back.pop(tp, None)
        try:
            await self.seek(tp, offset)
        except (IllegalStateError, AssertionError) as e:  # no longer assigned: not ours
            log.info("partition %s not sought back to %d: %s", tp, offset, e)
            return
        if first is not None:
            self._sought_back[tp] = (offset, first)

    def _ack_when_done(
        self, batch: Sequence[Any], current: Callable[[], bool], done: asyncio.Future[None]
    ) -> None:
        # A failed batch stays unacked: the handler raises it with the next batch. A batch
        # done after its generation ended is not acked either: Faust dropped the acks of
        # revoked partitions, and these would be read as a later generation's.
        if not done.cancelled() and done.exception() is None and current():
            self._ack_all(batch)

    async def on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        # Every assigned partition starts again at its committed offset: acks and gaps
        # kept from an earlier generation (a batch finished during the revocation) would
        # only be wrong now, and nothing is taken until the seek says where it starts.
        handlers = getattr(self.app, "batch_handlers", {})
        self._next_offset.clear()
        self._sought_back.clear()
        for tp in assigned:
            if tp.topic in handlers:
                self._acked.pop(tp, None)
                self._acked_index.pop(tp, None)
                self._gap.pop(tp, None)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        """Faust's seek of every assigned partition to its committed offset (recovery
        calls it after each assignment), then: the batch topics' partitions are taken
        from there, in order."""
        generation = self.app.consumer_generation_id
        await super().perform_seek()
        if self.app.consumer_generation_id != generation:
            return  # another assignment came meanwhile: its own seek follows
        handlers = getattr(self.app, "batch_handlers", {})
        fresh = []
        for tp in self.assignment():
            if tp.topic in handlers:
                # Seeks back made before this seek say nothing about where fetches start.
                self._sought_back.pop(tp, None)
                committed = self._committed_offset[tp]
                if committed and committed > 0:
                    self._next_offset[tp] = committed
                else:  # no commit yet: from the first record the reset policy gives
                    self._next_offset[tp] = None
                    fresh.append(tp)
        if fresh and self.app.conf.consumer_auto_offset_reset == "earliest":
            # Records dropped before this seek moved the position on: back to the start,
            # and taken from there (a fetch made before the seek may still arrive).
            await self._seek_to_start(fresh)
            starts = await self._log_starts(fresh)
            if self.app.consumer_generation_id == generation:
                self._next_offset.update(starts)

    async def _log_starts(self, tps: list[Any]) -> dict[Any, int]:
        """Each partition's first offset (None stays where the broker cannot say)."""
        try:
            starts = await self.earliest_offsets(*tps)
        except Exception as e:  # revoked meanwhile, or the broker away: the next seek says
            log.info("partitions %s: log start unknown: %s", tps, e)
            return {}
        by_tp = {(t.topic, t.partition): o for t, o in starts.items()}
        return {
            tp: o for tp in tps if (o := by_tp.get((tp.topic, tp.partition))) is not None and o >= 0
        }

    async def _seek_to_start(self, tps: list[Any]) -> None:
        try:
            await self._thread.seek_to_beginning(
                *(TopicPartition(t.topic, t.partition) for t in tps)
            )
        except (IllegalStateError, AssertionError) as e:  # revoked meanwhile: not ours
            log.info("partitions %s not sought to their start: %s", tps, e)

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


class Emitter(Protocol):
    """Where the worker's records go: ``send`` returns once every record is delivered,
    with each partition's offset of the last of them (None where not known)."""

    async def send(self, topic: str, records: Sequence[Record]) -> dict[int, int] | None: ...


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

    async def send(self, topic: str, records: Sequence[Record]) -> dict[int, int]:
        """Returns each partition's offset of the last of ``records`` sent to it."""
        if not records:
            return {}
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        n = await self._partition_count(producer, topic)
        by_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
        for partition, key, value in records:
            if partition is None:
                # Cached per key: alerts and transitions are keyed by customer, and
                # kafka-python's murmur2 is pure Python.
                partition = key_partition(key, n) if key else 0
            by_partition.setdefault(partition, []).append((key, value))
        pending, counts = [], []
        for partition, kvs in by_partition.items():
            batch = producer.create_batch()
            for key, value in kvs:
                # A full batch (the producer's max_batch_size) goes out; the record opens
                # the next one (the first record of a batch always fits).
                while batch.append(key=key, value=value, timestamp=None) is None:
                    counts.append(batch.record_count())
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
            counts.append(batch.record_count())
            pending.append(await producer.send_batch(batch, topic, partition=partition))
        last: dict[int, int] = {}
        # Each batch's metadata has the offset of its first record.
        for meta, n in zip(await asyncio.gather(*pending), counts, strict=True):
            end = meta.offset + n - 1
            if end > last.get(meta.partition, -1):
                last[meta.partition] = end
        return last
