"""The worker's table store, as the batch path uses it: read, stage, persist, scan.

The batch path writes the table's store directly (agents/app.py: one write per changed
customer per batch, the changelog sent by the worker itself), so it does for the store
what a Faust table does on ``table[key] = value``, in the order that keeps a restart
right:

- ``stage``: a batch's new states are readable at once (the next batch loads them), from
  a small overlay, but not yet stored.
- ``persist``: once the batch's effects are done (ClickHouse, the output topics, then
  the changelog), its states go into the store with the changelog offsets they were
  sent at. So a store that survives a crash (RocksDB) never holds a state whose events
  are not yet in ClickHouse, or whose changelog record is not yet with the broker: after
  a ``kill -9`` Faust's recovery reads the changelog from the stored offset on, and the
  input redelivered from the committed offsets is skipped only where its effects were
  written. (A store written at once would skip the redelivered events of a batch whose
  rows never reached ClickHouse.)
- ``scan``: one partition's customers (the silence deadlines rebuilt at assignment).

Two stores: ``memory://`` (Faust's dict; rebuilt from the whole changelog at every start)
and ``rocksdict://`` (Faust's RocksDB store through rocksdict: one database per table
partition in the data dir, opened and closed by Faust as partitions are assigned and
revoked, with the changelog offset it holds, so a restart reads only what came after).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from agents.records import Stored

MEMORY, ROCKSDB = "memory://", "rocksdict://"
# Faust names its RocksDB store rocksdb:// whatever the binding; rocksdict is the one
# that installs from PyPI with no system library.
STORES = {"memory://": MEMORY, "rocksdict://": ROCKSDB, "rocksdb://": ROCKSDB}

# RocksDB per table partition. Faust's defaults (a 2 GiB block cache and up to three
# 64 MiB write buffers per partition database) let 8 partitions take 17 GiB; a stored
# customer is ~250 bytes, so a partition of 125,000 customers (1M per 8) is ~30 MiB.
ROCKSDB_OPTIONS: dict[str, Any] = {
    "block_cache_size": 16 * 2**20,
    "write_buffer_size": 8 * 2**20,
    "max_write_buffer_number": 2,
    "bloom_filter_size": 10,  # bits per key: ~1% false positives (Faust's 3: ~15%)
}


def faust_store(store: str) -> tuple[str, dict[str, Any]]:
    """Faust's store URL and the table options for a TOUCHSTREAM_STORE value."""
    if STORES[store] == ROCKSDB:
        return "rocksdb://", {"driver": "rocksdict", **ROCKSDB_OPTIONS}
    return "memory://", {}


class TableState:
    """The customers table's store behind the batch path (module doc)."""

    def __init__(self, table: Any) -> None:
        self.table = table
        self.store = table.data
        self.rocksdb = hasattr(self.store, "_dbs")
        # Staged and not yet persisted: key -> (value, partition). Holds the states of
        # the batches whose effects are in flight (at most a few batches' customers).
        self.staged: dict[bytes, tuple[bytes, int]] = {}

    def get(self, key: bytes) -> bytes | None:
        hit = self.staged.get(key)
        if hit is not None:
            return hit[0]
        if not self.rocksdb:
            return self.store.data.get(key)
        # A customer is only in its partition's database; Bloom filters make the
        # others' misses cheap. Faust's own lookup would also search every database.
        for db in list(self.store._dbs.values()):
            value = db.get(key)
            if value is not None:
                return value
        return None

    def open(self, partitions: Iterable[int]) -> None:
        """Make sure the databases of the partitions a batch reads are open (Faust opens
        them at assignment and for recovery): a customer in a database not open would
        be read as a new one."""
        if self.rocksdb:
            for p in partitions:
                if p not in self.store._dbs:
                    self.store._db_for_partition(p)

    def stage(self, key: bytes, value: bytes, partition: int) -> None:
        self.staged[key] = (value, partition)

    def persist(self, states: Mapping[bytes, bytes], offsets: Mapping[int, int] | None) -> None:
        """Store a batch's states whose changelog records the broker has; ``offsets``:
        changelog partition -> the offset of the last of them (None: not known, as in
        Faust's test context, where nothing is sent)."""
        staged = self.staged
        if self.rocksdb:
            import rocksdict

            batches: dict[int, Any] = {}
            for key, value in states.items():
                p = Stored.partition_of(value)
                batch = batches.get(p)
                if batch is None:
                    batch = batches[p] = rocksdict.WriteBatch(raw_mode=True)
                batch.put(key, value)
            for p, offset in (offsets or {}).items():
                if p not in batches:
                    batches[p] = rocksdict.WriteBatch(raw_mode=True)
                # The offset in the same write as the states: a crash keeps both or
                # neither, and recovery starts where the store is.
                batches[p].put(self.store.offset_key, str(offset).encode())
            for p, batch in batches.items():
                self.store._db_for_partition(p).write(batch)
        else:
            data = self.store.data
            for key, value in states.items():
                data[key] = value
        for key, value in states.items():
            hit = staged.get(key)
            if hit is not None and hit[0] is value:  # not restaged by a later batch
                del staged[key]

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked: their staged states are no longer this worker's (once the
        effects in flight are done, none is left; this is for a batch that failed)."""
        gone = set(partitions)
        for key in [k for k, (_, p) in self.staged.items() if p in gone]:
            del self.staged[key]

    def scan(self, partition: int) -> Iterator[tuple[str, bytes]]:
        """``partition``'s customers as (customer_id, stored bytes), staged ones included:
        a snapshot of the table as the batch path sees it now, read lazily, so batches
        may change the table while it is read (RocksDB's iterator reads the database as
        it was when created; the memory store's items are copied)."""
        staged = [(k, v) for k, (v, p) in self.staged.items() if p == partition]
        skip = set(self.staged)
        if self.rocksdb:
            skip.add(self.store.offset_key)
            items: Iterable[tuple[bytes, bytes]] = self.store._db_for_partition(partition).items()
        else:
            items = [
                (k, v) for k, v in self.store.data.items() if Stored.partition_of(v) == partition
            ]
        return self._scan(staged, skip, items)

    @staticmethod
    def _scan(
        staged: list[tuple[bytes, bytes]], skip: set[bytes], items: Iterable[tuple[bytes, bytes]]
    ) -> Iterator[tuple[str, bytes]]:
        for key, value in staged:
            yield key.decode(), value
        for key, raw in items:
            if key not in skip:
                yield key.decode(), raw
