"""Agent tests run the real agent body in Faust's test context (no broker) against a real
embedded ClickHouse (chdb). Faust's test context starts no producer, so what the worker
produces (the table's changelog and the output topics, all through its emitter) is
recorded by a stand-in."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agents.app import Worker, build_app
from agents.records import key_partition
from sinks import Sink, open_sink
from touchstream.config import Settings


@dataclass
class Harness:
    worker: Worker
    sink: Sink
    changelog: list[tuple[int | None, bytes, bytes]] = field(default_factory=list)
    sent: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)

    @property
    def dead_letters(self) -> list[tuple[bytes | None, bytes]]:
        return self.sent.get("dead_letters", [])

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        return self.sink.query(sql.format(db=self.sink.database))[1]

    async def wait_for(self, messages: int, timeout: float = 10.0) -> None:
        """Until the agent has handled ``messages`` messages (in however many batches)."""
        t = self.worker.totals
        deadline = asyncio.get_running_loop().time() + timeout
        while t.accepted + t.duplicates + t.redelivered + t.rejected < messages:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"only {t} after {timeout}s")
            await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """The worker's emitter here: records what it would produce, by output name."""

    partitions: int
    changelog: str = ""
    names: dict[str, str] = field(default_factory=dict)
    changelog_records: list[tuple[int | None, bytes, bytes]] = field(default_factory=list)
    sent: dict[str, list[tuple[bytes | None, bytes]]] = field(default_factory=dict)

    async def send(
        self, topic: str, records: Any
    ) -> None:  # offsets unknown, as in Faust's test context
        for partition, key, value in records:
            if topic == self.changelog:
                # What the real emitter does without a partition: Kafka's default partitioner.
                if partition is None:
                    partition = key_partition(key, self.partitions)
                self.changelog_records.append((partition, key, value))
            else:
                self.sent.setdefault(self.names[topic], []).append((key, value))


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chdb opens one directory per process: the tests share it, each with its own database.
    return tmp_path_factory.mktemp("chdb")


# Every agent test runs on both table stores: the memory store, and RocksDB (the
# production one), whose databases the batch path writes and reads (agents/state.py).
@pytest.fixture(params=["memory://", "rocksdict://"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, chdb_dir: Path) -> Iterator[Harness]:
    sink = open_sink(f"chdb://{chdb_dir}?database=t_{uuid.uuid4().hex[:8]}")
    sink.migrate()
    settings = Settings(
        broker="kafka://127.0.0.1:9",
        store=request.param,
        data_dir=str(tmp_path / "worker"),
        batch_max=1000,
        batch_within_s=0.05,
    )
    recorder = Recorder(settings.partitions)
    worker = build_app(settings, sink, emitter=recorder)
    recorder.changelog = worker.table.changelog_topic.get_topic_name()
    recorder.names = {topic: name for name, topic in worker.outputs.items()}
    h = Harness(worker, sink, recorder.changelog_records, recorder.sent)
    try:
        yield h
    finally:
        sink.close()
