"""What goes into and comes out of one batch of the worker: the raw Kafka message, the
bytes the table holds per customer, the batch's result, and the partitioner of the
worker's own output records."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from kafka.partitioner.default import murmur2

from sinks.base import Row
from touchstream.domain import codec, messages
from touchstream.domain.customer import CustomerState


@functools.lru_cache(maxsize=1 << 16)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2; pure Python, so cached per key), for the
    worker's own output records. Input may come partitioned by any partitioner."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# A customer's stored bytes in the table (None: not there).
Load = Callable[[str], bytes | None]
# Every (customer_id, stored bytes) of one partition of the table.
Scan = Callable[[int], Iterable[tuple[str, bytes]]]


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Stored:
    """What the table holds per customer: the domain state and the transport position
    (partition, offset) of the last message applied, so a redelivered message is skipped
    exactly, whatever its event id. The bytes are touchstream.domain.codec's."""

    state: CustomerState
    partition: int
    offset: int

    def encode(self) -> bytes:
        return codec.encode(self.state, self.partition, self.offset)

    @staticmethod
    def partition_of(raw: bytes) -> int:
        return codec.partition_of(raw)

    @staticmethod
    def decode(raw: bytes) -> Stored:
        work, partition, offset = codec.decode(raw)
        return Stored(work.freeze(), partition, offset)


@dataclass
class BatchResult:
    states: dict[str, bytes] = field(default_factory=dict)  # customer_id -> Stored bytes
    rows: dict[str, list[Row]] = field(default_factory=dict)  # table -> rows
    dead_letters: list[tuple[bytes | None, bytes]] = field(default_factory=list)  # (key, value)
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)
    transitions: list[tuple[bytes, bytes]] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    redelivered: int = 0
    rejected: int = 0
    deadlines_fired: int = 0


def dead_letter_envelope(m: RawMessage, reason: str) -> bytes:
    """The dead-letter topic's value for ``m`` (touchstream.domain.messages)."""
    return messages.dead_letter_envelope(reason, m.topic, m.partition, m.offset, m.key, m.value)
