"""One batch of raw Kafka messages -> state updates, ClickHouse rows, dead letters.

This is the worker's hot path without Faust: decode, validate, route by customer,
fold the domain's step function once per customer, and encode each changed state once
per batch. The Faust agent (agents/app.py) only feeds it messages and applies its
result, so the same code runs in tests, benchmarks and production.

Between batches the processor keeps the decoded working copies of recently seen
customers (``Processor(state_cache=...)``), trusted only while ``load`` returns the bytes
they were decoded from; rows carry DateTime values as epoch milliseconds.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from heapq import heappush, heapreplace
from itertools import islice
from typing import Any, NamedTuple

from agents.deadlines import DeadlineIndex
from agents.records import BatchResult, Load, RawMessage, Scan, dead_letter_envelope
from schemas.decode import Rejected, decode
from schemas.events import Purchase, Refund, ahead_of_received, epoch_ms
from sinks.base import Row
from sinks.rows import (
    alert_row,
    clock_row,
    cutoffs_row,
    dead_letter_row,
    event_row,
    state_row,
    transition_row,
)
from sinks.tables import MONEY, MONEY_LIMIT
from touchstream.domain import codec, messages
from touchstream.domain.alerts import Alert, with_churn
from touchstream.domain.btyd import Model
from touchstream.domain.customer import Working, churn_scores
from touchstream.domain.lifecycle import DEFAULT_RULES, Rules, Transition
from touchstream.domain.messages import CLOCK_KEY
from touchstream.domain.scoring import (
    Cutoffs,
    PointKeys,
    RfmSketches,
    cutoffs_from,
    medians_from,
    point_keys,
)
from touchstream.domain.update import advance_working, apply

log = logging.getLogger("touchstream.processor")


# Customers whose decoded state the processor keeps between batches (``state_cache``):
# about 2.2 KB each after 10 purchases, 3 KB with a full dedup window and 90 purchase
# days (+8 bytes per further day), so the default costs 200-300 MB: with a table of a
# million customers (about 0.4 GB) a worker stays within 1.5 GB.
STATE_CACHE = 100_000


# Customers read per slice when the worker rebuilds a partition's deadline index after an
# assignment (Processor.index_slice): about 30 ms of the event loop at a time, so a worker
# holding millions of customers processes events (and answers the till) at once.
INDEX_SLICE = 5_000
# Deadlines a partition keeps in memory, the earliest first (Processor.index_limit): about
# 45 MB a partition, whatever the customers; a worker of 1M customers on 8 partitions
# keeps them all, one of 10M reads a partition again when stream time passes the earliest
# 250,000 (weeks of stream time in a live stream).
INDEX_LIMIT = 250_000


class Cached(NamedTuple):
    """A customer in the processor's state cache: the stored bytes it was decoded from
    (the entry is used only while the table holds these very bytes), the decoded working
    copy (compacted: ``_compact``), where it stands, and its sketch keys."""

    raw: bytes
    work: Working
    partition: int
    offset: int
    keys: PointKeys | None


class Processor:
    """The worker's memory besides the table: stream time per partition, an index of
    silence deadlines per partition (rebuilt from the table after a restart or a
    rebalance, the first time a partition is seen), and the decoded states of the
    customers of recent batches.

    The state cache saves decoding a customer's stored bytes again in the next batch:
    up to ``state_cache`` customers, least recently used out first (0: no cache). An
    entry is used only when ``load`` returns the very bytes it was made from (equal
    bytes, usually the same object), so a table changed by anyone else (a rebalance, a
    restart, a restore) is simply decoded again. A batch takes the entries it uses out of
    the cache and puts its working copies back at its end: nothing in the cache is ever
    changed, and a batch that fails half-way leaves no stale entry behind."""

    def __init__(
        self,
        rules: Rules = DEFAULT_RULES,
        partitions: int | None = None,
        state_cache: int = STATE_CACHE,
        model: Model | None = None,
        max_future_skew_ms: int | None = None,
        index_slice: int | None = None,
        index_limit: int | None = None,
    ) -> None:
        self.rules = rules
        # A partition's deadline index and RFM sketch are rebuilt from its customers after
        # each assignment. None: all at once, in the first batch that needs them. A number:
        # that many customers at a time (``build_indexes``), so a worker holding millions
        # processes events again at once; the partition's deadlines wait until its index
        # is whole, then fire as stream time says (they are dated at the deadline, so
        # firing later gives the same results, as a larger batch would).
        self.index_slice = index_slice
        # At most this many deadlines of a partition in memory (None: all): the earliest,
        # up to a horizon; when stream time passes it the partition is read again. So
        # memory stays bounded however many customers a worker holds.
        self.index_limit = index_limit
        self._building: dict[int, _Building] = {}
        # The churn model (model_params' chosen version): each changed customer's values
        # go into its customer_state row, and into its alerts (score_state).
        self.model = model
        # An event dated more than this after its batch's received_at is dead-lettered
        # (the worker passes TOUCHSTREAM_MAX_FUTURE_SKEW_S); None: no such bound, for
        # offline replays whose received_at means nothing.
        self.max_future_skew_ms = max_future_skew_ms
        # The input topic's partition count, when known. Any partitioner is accepted (Java
        # and kafka-python hash keys with murmur2, librdkafka clients with CRC32): what the
        # state needs is that a customer stays on one partition, checked per message.
        self.partitions = partitions
        # Deadlines fire when stream time passes them by this much, so an event that
        # arrives up to this late is still applied before its customer's deadline.
        self.lateness_ms = rules.allowed_lateness_ms
        self.stream_time: dict[int, int] = {}
        # Per partition: a time by which the partition is known complete (clock messages,
        # idle partitions advanced by the worker): deadlines up to it fire too.
        self.watermark: dict[int, int] = {}
        self._deadlines: dict[int, DeadlineIndex] = {}
        # The RFM population of each partition, for score cut-offs (domain.scoring).
        self.sketches: dict[int, RfmSketches] = {}
        # customer_id -> its Cached entry, least recently used first.
        self.state_cache = state_cache
        self._cache: dict[str, Cached] = {}
        # Customers in the table per partition, for the metrics: counted by the scan that
        # builds a partition's deadline index, then kept up to date by each batch.
        self.customers: dict[int, int] = {}

    def customers_held(self) -> int:
        """Customers in the table, of the partitions this processor has seen."""
        return sum(self.customers.values())

    def deadlines_pending(self) -> int:
        """Silence deadlines waiting for stream time to pass them, all partitions."""
        return sum(len(index.latest) for index in self._deadlines.values())

    @property
    def building(self) -> list[int]:
        """Partitions whose deadline index is not whole yet (their deadlines wait)."""
        return sorted(self._building)

    def _index(self, partition: int, scan: Scan) -> DeadlineIndex | None:
        """The partition's deadline index, or None while it is being built."""
        index = self._deadlines.get(partition)
        if index is None:
            building = self._building.get(partition)
            if building is None:
                # Every customer of the partition, once after each assignment (a restart, a
                # rebalance): only the fields the index and the sketches need are read, not
                # the whole state (codec.index_view), and nothing goes into the state cache.
                building = self._building[partition] = _Building(
                    iter(scan(partition)), self.index_limit, RfmSketches()
                )
            self._build(partition, building, self.index_slice)
            index = self._deadlines.get(partition)
        return index

    def _read_again(self, partition: int, scan: Scan, batch: _Batch) -> None:
        """Stream time passed the horizon of a bounded index: read the partition again for
        the next earliest deadlines (the sketch is whole already: kept as it is). The
        batch's changed customers count as they are now, not as the table has them."""
        del self._deadlines[partition]
        building = self._building[partition] = _Building(iter(scan(partition)), self.index_limit)
        building.deadlines.update(
            (cid, c.work.next_deadline_ms)
            for cid, c in batch.customers.items()
            if c is not None and c.changed and c.partition == partition
        )
        self._build(partition, building, self.index_slice)

    def build_indexes(self) -> list[int]:
        """One slice (``index_slice`` customers) of an index being built; returns the
        partitions whose index became whole (their due deadlines fire at the next ``end``
        that names them)."""
        if not self._building:
            return []
        p = min(self._building)
        self._build(p, self._building[p], self.index_slice)
        return [] if p in self._building else [p]

    def _build(self, partition: int, b: _Building, limit: int | None) -> None:
        """Read up to ``limit`` more of the partition's scan (None: all of it); once it is
        read to its end, the index (and the sketch) are whole: the scan's snapshot, then
        what batches changed since it was taken."""
        view, heap, bound, changed = codec.index_view, b.heap, b.bound, b.deadlines
        points: list[tuple[PointKeys | None, PointKeys | None]] | None = (
            [] if b.sketch is not None else None
        )
        started = time.perf_counter()
        n = 0
        for cid, raw in b.items if limit is None else islice(b.items, limit):
            n += 1
            state = view(raw)
            # A customer a batch changed since the scan began: its deadline as it is now.
            deadline = changed.get(cid, state.next_deadline_ms)
            if deadline is not None:
                if bound is None:
                    heap.append((-deadline, cid))
                elif len(heap) < bound:
                    heappush(heap, (-deadline, cid))
                elif deadline < -heap[0][0]:  # among the earliest: the latest kept goes
                    b.dropped(-heapreplace(heap, (-deadline, cid))[0])
                else:
                    b.dropped(deadline)
            if points is not None:
                points.append((None, point_keys(state)))
        if points and b.sketch is not None:  # moved per slice: no list of every customer
            b.sketch = b.sketch.move(points)
        b.scanned += n
        b.seconds += time.perf_counter() - started
        if limit is not None and n == limit:
            return  # maybe more: a scan read to its end is seen by the next slice
        del self._building[partition]
        # Every deadline before the earliest one left out is indexed: that is the horizon.
        horizon = None if b.first_dropped is None else b.first_dropped - 1
        index = DeadlineIndex(((-d, cid) for d, cid in heap), horizon)
        self._deadlines[partition] = index
        for cid, deadline in b.deadlines.items():
            index.set(cid, deadline)
        if b.sketch is not None:
            try:
                sketch = b.sketch.move(b.moves)
            except ValueError:  # as in a batch: never stop for it
                sketch = b.sketch.move(b.moves, strict=False)
            self.sketches[partition] = sketch
            self.customers[partition] = b.scanned + b.new
        if b.scanned:  # what a restart or a rebalance costs before the deadlines fire
            log.info(
                "partition %d: %d customers scanned, %d deadlines indexed%s in %.1fs",
                partition,
                b.scanned,
                len(heap),
                ""
                if horizon is None
                else f" (those up to {datetime.fromtimestamp(horizon / 1000, UTC):%Y-%m-%d %H:%M})",
                b.seconds,
            )

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: drop what we keep of them (rebuilt if they come back)."""
        gone = set(partitions)
        for p in gone:
            self._deadlines.pop(p, None)
            self._building.pop(p, None)
            self.stream_time.pop(p, None)
            self.watermark.pop(p, None)
            self.sketches.pop(p, None)
            self.customers.pop(p, None)
        if gone and self._cache:
            self._cache = {cid: e for cid, e in self._cache.items() if e.partition not in gone}

    def population(self) -> RfmSketches:
        """This worker's partitions' RFM sketches, merged."""
        return RfmSketches().merge(*self.sketches.values())

    def process(
        self,
        messages: Sequence[RawMessage],
        load: Load,
        received_at: datetime,
        scan: Scan = lambda p: (),
        wall_ms: int | None = None,
        partitions: Iterable[int] = (),
        watermarks: Mapping[int, int] | None = None,
    ) -> BatchResult:
        """Apply a batch. ``wall_ms`` (live mode only) lets the wall clock, less the
        allowed lateness, fire deadlines on ``partitions`` (this worker's, quiet or not).
        ``watermarks``: partitions known complete up to a time (idle partitions the worker
        advances): their deadlines up to it fire."""
        batch = self.begin(load, received_at)
        for m in messages:
            batch.message(m)
        return self.end(
            batch, {m.partition for m in messages}, scan, wall_ms, partitions, watermarks
        )

    def begin(self, load: Load, received_at: datetime) -> _Batch:
        """A batch taken in parts: ``message`` for each message (the caller may do other
        work between them: the worker answers the till), then ``end``. The same as
        ``process``."""
        return _Batch(self, load, received_at)

    def end(
        self,
        batch: _Batch,
        seen: Iterable[int],
        scan: Scan = lambda p: (),
        wall_ms: int | None = None,
        partitions: Iterable[int] = (),
        watermarks: Mapping[int, int] | None = None,
    ) -> BatchResult:
        """Fire the deadlines now due and finish the batch. ``seen``: the partitions its
        messages came from."""
        marks = self.watermark
        for p, t in (watermarks or {}).items():
            if t > marks.get(p, 0):
                marks[p] = t
        due = set(seen) | set(partitions) | set(watermarks or ())
        for p in sorted(due):
            index = self._index(p, scan)
            if index is None:
                continue  # its deadlines wait for the index to be whole
            st = max(batch.clocks.get(p, 0), self.stream_time.get(p, 0))  # this batch counts
            if wall_ms is not None:
                st = max(st, wall_ms)
            due_by = max(st - self.lateness_ms, marks.get(p, 0))
            batch.fire(p, index, due_by)
            while index is not None and index.horizon is not None and due_by > index.horizon:
                # Past a bounded index's horizon: read the next earliest deadlines; read at
                # once (no index_slice), they fire in this batch too.
                self._read_again(p, scan, batch)
                index = self._deadlines.get(p)
                if index is not None:
                    batch.fire(p, index, due_by)
        return batch.finish()


class _Building:
    """A partition's deadline index (and, after an assignment, its sketch) while its scan
    is read slice by slice, and what batches changed meanwhile (applied over the scan's
    snapshot at its end). ``bound``: keep only that many of the earliest deadlines."""

    __slots__ = (
        "items",
        "bound",
        "sketch",
        "heap",
        "first_dropped",
        "moves",
        "deadlines",
        "new",
        "scanned",
        "seconds",
    )

    def __init__(
        self,
        items: Iterator[tuple[str, bytes]],
        bound: int | None = None,
        sketch: RfmSketches | None = None,
    ) -> None:
        self.items, self.bound, self.sketch = items, bound, sketch
        self.heap: list[tuple[int, str]] = []  # (-deadline, customer): the latest on top
        self.first_dropped: int | None = None  # the earliest deadline left out
        self.moves: list[tuple[PointKeys | None, PointKeys | None]] = []
        self.deadlines: dict[str, int | None] = {}
        self.new = 0
        self.scanned = 0
        self.seconds = 0.0

    def dropped(self, deadline: int) -> None:
        if self.first_dropped is None or deadline < self.first_dropped:
            self.first_dropped = deadline


class _Customer:
    """A customer's state during one batch: a working copy, updated in place by every
    event and deadline of the batch and encoded once at its end."""

    __slots__ = ("work", "partition", "offset", "raw", "before", "applied", "changed", "touched")

    def __init__(
        self,
        work: Working,
        partition: int,
        offset: int,
        raw: bytes | None,
        before: PointKeys | None,
    ) -> None:
        self.work, self.partition, self.offset, self.raw = work, partition, offset, raw
        self.before = before  # the sketch keys of the state as loaded (point_keys)
        self.applied: list[bytes] = []  # the values of the events this batch applied
        self.changed = False  # the state moved: a new state row
        self.touched = False  # ... or only its stored offset: a table write


_UNSEEN: Any = object()


class _Batch:
    """The bookkeeping of one Processor.process call."""

    def __init__(self, proc: Processor, load: Load, received_at: datetime) -> None:
        self.proc, self.load = proc, load
        self.received_ms = epoch_ms(received_at)  # DateTime values in rows are epoch ms
        self.skew = proc.max_future_skew_ms
        self.rules, self.stream_time = proc.rules, proc.stream_time
        self.out = BatchResult()
        self.events_rows: list[Row] = []
        self.dead_rows: list[Row] = []
        self.transition_rows: list[Row] = []
        self.alert_rows: list[Row] = []
        self.customers: dict[str, _Customer | None] = {}  # as loaded, in load order
        self.cache = proc._cache
        self.clocks: dict[int, int] = {}
        self._updated_by_partition: dict[int, list[tuple[str, int | None]]] | None = None

    def stored(self, cid: str) -> _Customer | None:
        c = self.customers.get(cid, _UNSEEN)
        if c is _UNSEEN:
            raw = self.load(cid)
            hit = self.cache.pop(cid, None)  # taken out: this batch may change it
            c = None
            if raw:
                if hit is not None and (hit.raw is raw or hit.raw == raw):
                    c = _Customer(_expand(hit.work), hit.partition, hit.offset, raw, hit.keys)
                else:
                    work, partition, offset = codec.decode(raw)
                    c = _Customer(work, partition, offset, raw, point_keys(work))
            self.customers[cid] = c
        return c

    def reject(self, m: RawMessage, reason: str) -> None:
        self.out.rejected += 1
        self.out.dead_letters.append((m.key, dead_letter_envelope(m, reason)))
        self.dead_rows.append(
            dead_letter_row(
                m.topic, m.partition, m.offset, m.key, m.value, reason, self.received_ms
            )
        )

    def clock(self, m: RawMessage) -> None:
        t = messages.clock_time(m.value)
        if isinstance(t, str):
            return self.reject(m, t)
        p = m.partition
        marks = self.proc.watermark
        if t > marks.get(p, 0):
            marks[p] = t
        if t > self.clocks.get(p, self.stream_time.get(p, 0)):
            self.clocks[p] = t  # the period is closed: stream time is at least that
        return None

    def message(self, m: RawMessage) -> None:
        if m.key == CLOCK_KEY:
            return self.clock(m)
        ev = decode(m.value)
        if ev.__class__ is Rejected:
            return self.reject(m, ev.reason)
        key = m.key.decode("utf-8", "replace") if m.key is not None else None
        cid = ev.customer_id  # type: ignore[union-attr]
        if key != cid:
            return self.reject(
                m,
                f"message key {key!r} is not the customer_id "
                f"{cid!r}: key each message by its customer_id",
            )
        p, offset = m.partition, m.offset
        c = self.customers.get(cid, _UNSEEN)
        if c is _UNSEEN:
            c = self.stored(cid)
        if c is not None and c.partition != p:
            # The customer's first partition is its home: a second one would split its
            # state (and its sketch point) across partitions and workers.
            return self.reject(
                m,
                f"message on partition {p}, but customer {cid!r} is on "
                f"partition {c.partition}: produce each customer's "
                "messages to one partition (key them by customer_id, with "
                "the same partitioner in every producer)",
            )
        if c is not None and c.partition == p and offset <= c.offset:
            self.out.redelivered += 1
            return None
        t = epoch_ms(ev.occurred_at)  # type: ignore[union-attr]
        if self.skew is not None and t - self.received_ms > self.skew:
            # The contract's future bound (decode can check it too), on the t at hand.
            return self.reject(m, ahead_of_received(t, self.received_ms, self.skew))  # type: ignore[arg-type]
        clocks = self.clocks
        if t > clocks.get(p, self.stream_time.get(p, 0)):
            clocks[p] = t
        fresh = c is None
        if c is None:
            c = _Customer(Working(cid), p, offset, None, None)
        try:
            r = apply(c.work, ev, t, self.rules)  # type: ignore[arg-type]
        except Exception as e:  # a bug must not stop the stream: park the message, say why
            log.exception("event %s of %s could not be processed", ev.event_id, cid)  # type: ignore[union-attr]
            if not fresh:
                self.restore(c)
            return self.reject(m, f"could not be processed: {e!r}")
        if (
            r is not None
            and (ev.__class__ is Purchase or ev.__class__ is Refund)
            and (c.work.purchase_total >= MONEY_LIMIT or c.work.refund_total >= MONEY_LIMIT)
        ):
            # Stored, the total would be rounded or refused by ClickHouse: park the event.
            total = "purchase_total" if ev.__class__ is Purchase else "refund_total"
            reason = (
                f"{ev.type} of {ev.amount} would take customer {cid!r}'s {total} to "
                f"{getattr(c.work, total)}, beyond what ClickHouse {MONEY} holds "
                f"(under {MONEY_LIMIT:,}): not applied; check this customer's amounts"
            )
            if not fresh:
                self.restore(c)
            return self.reject(m, reason)
        if fresh:
            self.customers[cid] = c
        c.partition, c.offset, c.touched = p, offset, True
        if r is None:
            self.out.duplicates += 1
            return None
        c.applied.append(m.value)
        c.changed = True
        self.events_rows.append(event_row(ev, c.work.version, p, offset, t))  # type: ignore[arg-type]
        if r[1]:
            for o in r[1]:
                self.emit(o, c.work)  # type: ignore[arg-type]
        return None

    def restore(self, c: _Customer) -> None:
        """Undo a failed event: the state as loaded, with this batch's earlier events
        (decoded again: keeping the events alive for this rare case costs GC time)."""
        c.work = codec.decode(c.raw)[0] if c.raw else Working(c.work.customer_id)
        for value in c.applied:
            ev = decode(value)
            apply(c.work, ev, epoch_ms(ev.occurred_at), self.rules)  # type: ignore[arg-type, union-attr]

    def emit(self, o: Transition | Alert, work: Working | None = None) -> None:
        key = o.customer_id.encode()
        if isinstance(o, Transition):
            self.transition_rows.append(transition_row(o))
            self.out.transitions.append((key, messages.transition_value(o)))
        else:
            model = self.proc.model
            if model is not None and work is not None:
                scores = churn_scores(model, work, o.at_ms)
                if scores is not None:
                    o = with_churn(o, scores[1], scores[3])
            self.alert_rows.append(alert_row(o))
            self.out.alerts.append((key, messages.alert_value(o)))

    def fire(self, partition: int, index: DeadlineIndex, due_by: int) -> None:
        """Fire the silence deadlines of ``partition`` due by ``due_by``."""
        # Customers updated by this batch's messages get their (new) deadline indexed first;
        # grouped by partition once, not scanned again for every partition.
        if self._updated_by_partition is None:
            self._updated_by_partition = {}
            for cid, c in self.customers.items():
                if c is not None and c.changed:
                    self._updated_by_partition.setdefault(c.partition, []).append(
                        (cid, c.work.next_deadline_ms)
                    )
        for cid, deadline in self._updated_by_partition.get(partition, ()):
            index.set(cid, deadline)
        fired: list[tuple[str, _Customer]] = []
        while (due := index.pop_due(due_by)) is not None:
            deadline, cid = due
            c = self.stored(cid)
            if c is None:
                continue
            if c.work.next_deadline_ms != deadline:
                # Out of step with the table (a batch that failed half-way moved it):
                # the state decides, and the customer stays indexed.
                index.set(cid, c.work.next_deadline_ms)
                continue
            outputs = advance_working(c.work, due_by, self.rules)
            fired.append((cid, c))
            self.out.deadlines_fired += 1
            c.changed = c.touched = True
            for o in outputs:
                self.emit(o, c.work)  # type: ignore[arg-type]
        # Indexed again only now: a customer fires at most once per batch and partition.
        for cid, c in fired:
            index.set(cid, c.work.next_deadline_ms)

    def finish(self) -> BatchResult:
        out = self.out
        out.accepted = len(self.events_rows)  # one row per accepted event
        changed = [(cid, c) for cid, c in self.customers.items() if c is not None and c.changed]
        # Offset-only moves (duplicates) are stored too: the offset skips redeliveries.
        states = out.states
        counts = self.proc.customers
        for cid, c in self.customers.items():
            if c is not None and c.touched:
                states[cid] = codec.encode(c.work, c.partition, c.offset)
                if c.raw is None:  # a new customer in the table
                    counts[c.partition] = counts.get(c.partition, 0) + 1
        self.proc.stream_time.update(self.clocks)
        deltas: dict[int, list[tuple[PointKeys | None, PointKeys | None]]] = {}
        building = self.proc._building
        for cid, c in changed:
            keys = point_keys(c.work)
            b = building.get(c.partition)
            if b is not None:  # kept for when its index is whole (Processor._build)
                b.deadlines[cid] = c.work.next_deadline_ms
                b.new += c.raw is None
            if b is not None and b.sketch is not None:
                b.moves.append((c.before, keys))
            else:  # a customer never moves partition
                deltas.setdefault(c.partition, []).append((c.before, keys))
            c.before = keys  # for the cache: the keys of the state as stored now
        sketches = self.proc.sketches
        for p, ds in deltas.items():
            sk = sketches.get(p) or RfmSketches()
            try:
                sketches[p] = sk.move(ds)
            except ValueError:  # not the population this worker knew: never stop for it
                log.warning(
                    "partition %d: the RFM population missed customers this batch "
                    "changed (a table changed behind the worker?); counted afresh",
                    p,
                )
                sketches[p] = sk.move(ds, strict=False)
        quick = self.rules.quick_resolution_days
        model = self.proc.model
        out.rows = {
            "events": self.events_rows,
            "customer_state": [state_row(c.work, quick, model) for _, c in changed],
            "transitions": self.transition_rows,
            "alerts": self.alert_rows,
            "dead_letters": self.dead_rows,
            "stream_clock": [clock_row(p, t) for p, t in self.clocks.items()],
        }
        self.keep()
        return out

    def keep(self) -> None:
        """Put the batch's working copies into the processor's cache, with the bytes they
        are (the new ones, or those loaded), and drop the least recently used."""
        cache, size, states = self.cache, self.proc.state_cache, self.out.states
        if not size:
            return
        for cid, c in self.customers.items():
            if c is not None:
                raw = states.get(cid) or c.raw
                cache[cid] = Cached(
                    raw if raw.__class__ is bytes else bytes(raw),  # type: ignore[arg-type]
                    _compact(c.work),
                    c.partition,
                    c.offset,
                    c.before,
                )
        if len(cache) > size:
            for cid in list(islice(cache, len(cache) - size)):
                del cache[cid]


_LONG = 24  # purchase days: a longer list is kept as an array while cached


def _compact(w: Working) -> Working:
    """A working copy as the cache keeps it: long purchase day lists as 8-byte integers
    (a list holds 36 bytes per day). ``_expand`` undoes it when a batch takes it out."""
    if len(w.purchase_days) > _LONG:
        w.purchase_days = array("q", w.purchase_days)  # type: ignore[assignment]
    return w


def _expand(w: Working) -> Working:
    if w.purchase_days.__class__ is not list:
        w.purchase_days = list(w.purchase_days)
    return w


def cutoffs_row_for(
    population: RfmSketches, stream_time: Mapping[int, int], settings: Any
) -> Row | None:
    """The rfm_cutoffs row for a merged population at the latest stream time: quintiles,
    or the fixed thresholds when all three TOUCHSTREAM_RFM_FIXED_* are set. None when
    there is nothing to publish yet."""
    if population.count == 0 or not stream_time:
        return None
    as_of = max(stream_time.values())
    fixed = (
        settings.rfm_fixed_recency_days,
        settings.rfm_fixed_frequency,
        settings.rfm_fixed_monetary,
    )
    if all(fixed):
        cut = Cutoffs.fixed(
            recency_days=fixed[0],
            frequency=fixed[1],
            monetary=fixed[2],
            as_of_day=as_of // 86_400_000,
        )
    else:
        cut = cutoffs_from(population)
    rate, amount = medians_from(population)
    return cutoffs_row(cut, rate, amount, as_of)
