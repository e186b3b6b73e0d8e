"""agents/state.py on Faust's real stores (the memory store and RocksDB through
rocksdict, no broker): a batch's states are readable at once and stored only once its
effects are done, with the changelog offset they were sent at, and what was stored
survives a kill -9 of the process."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
from pathlib import Path

import faust
import pytest
from faust.types import TP

from agents.state import ROCKSDB, TableState, faust_store
from touchstream.config import Settings
from touchstream.domain import codec
from touchstream.domain.customer import Working

ROOT = Path(__file__).resolve().parents[2]
STORES = ["memory://", "rocksdict://"]


def table_in(datadir: Path, store: str, partitions: int = 4):
    url, options = faust_store(store)
    app = faust.App(
        "state-test",
        broker="kafka://127.0.0.1:9",
        store=url,
        datadir=str(datadir),
        web_enabled=False,
    )
    return app.Table(
        "customers",
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        use_partitioner=True,
        options=options,
    )


def stored(cid: str, partition: int, offset: int) -> bytes:
    return codec.encode(Working(cid), partition, offset)


def close(table) -> None:
    """What Faust does to the store when the worker stops."""
    asyncio.run(table.data.stop())
    gc.collect()


@pytest.mark.parametrize("store", STORES)
def test_a_staged_state_is_read_at_once_and_stored_only_when_persisted(
    tmp_path: Path, store: str
) -> None:
    table = table_in(tmp_path, store)
    state = TableState(table)
    value = stored("c1", 2, 10)
    state.stage(b"c1", value, 2)
    assert state.get(b"c1") == value
    assert TableState(table).get(b"c1") is None  # the store itself has nothing yet
    state.persist({b"c1": value}, {2: 7})
    assert TableState(table).get(b"c1") == value
    assert state.staged == {}
    if store == ROCKSDB:
        close(table)


@pytest.mark.parametrize("store", STORES)
def test_an_earlier_batch_persisted_leaves_a_later_batchs_state_of_the_customer_staged(
    tmp_path: Path, store: str
) -> None:
    table = table_in(tmp_path, store)
    state = TableState(table)
    first, second = stored("c1", 1, 10), stored("c1", 1, 11)
    state.stage(b"c1", first, 1)
    state.stage(b"c1", second, 1)  # the next batch changed the customer again
    state.persist({b"c1": first}, {1: 0})
    assert state.get(b"c1") == second
    assert TableState(table).get(b"c1") == first
    state.persist({b"c1": second}, {1: 1})
    assert state.staged == {} and state.get(b"c1") == second
    if store == ROCKSDB:
        close(table)


@pytest.mark.parametrize("store", STORES)
def test_a_scan_yields_one_partitions_customers_with_the_staged_ones_and_no_offset_key(
    tmp_path: Path, store: str
) -> None:
    table = table_in(tmp_path, store)
    state = TableState(table)
    values = {f"c{i}".encode(): stored(f"c{i}", i % 2, i) for i in range(6)}
    state.persist({k: v for k, v in values.items() if k != b"c4"}, {0: 3, 1: 5})
    changed = stored("c2", 0, 20)
    state.stage(b"c2", changed, 0)  # staged over a stored state
    state.stage(b"c4", values[b"c4"], 0)  # staged only
    assert dict(state.scan(0)) == {"c0": values[b"c0"], "c2": changed, "c4": values[b"c4"]}
    assert dict(state.scan(1)) == {"c1": values[b"c1"], "c3": values[b"c3"], "c5": values[b"c5"]}
    if store == ROCKSDB:
        close(table)


@pytest.mark.parametrize("store", STORES)
def test_revoked_partitions_staged_states_are_forgotten(tmp_path: Path, store: str) -> None:
    table = table_in(tmp_path, store)
    state = TableState(table)
    state.stage(b"a", stored("a", 0, 1), 0)
    state.stage(b"b", stored("b", 1, 1), 1)
    state.forget({1})
    assert state.get(b"a") is not None and state.get(b"b") is None
    if store == ROCKSDB:
        close(table)


KILLED_AFTER_PERSIST = """
import os, signal, sys
from pathlib import Path
import touchstream
from tests.unit.test_state import TableState, stored, table_in
state = TableState(table_in(Path(sys.argv[1]), "rocksdict://"))
state.persist({b"c1": stored("c1", 3, 40), b"c2": stored("c2", 3, 41)}, {3: 17})
state.stage(b"c3", stored("c3", 3, 42), 3)  # its effects were not done: never stored
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_what_rocksdb_stored_survives_a_kill_with_its_changelog_offset_and_nothing_staged(
    tmp_path: Path,
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_PERSIST, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    table = table_in(tmp_path, "rocksdict://")
    state = TableState(table)
    state.open({3})  # as the worker does for a batch's partitions
    assert state.get(b"c1") == stored("c1", 3, 40)
    assert state.get(b"c2") == stored("c2", 3, 41)
    assert state.get(b"c3") is None
    changelog = table.changelog_topic.get_topic_name()
    assert table.data.persisted_offset(TP(changelog, 3)) == 17
    close(table)


def test_the_store_setting_names_faust_stores_and_refuses_others(monkeypatch) -> None:
    assert Settings().store == "memory://"  # the local broker's topics live in memory
    assert faust_store("memory://") == ("memory://", {})
    url, options = faust_store("rocksdict://")
    assert url == "rocksdb://" and options["driver"] == "rocksdict"
    assert faust_store("rocksdb://") == (url, options)
    monkeypatch.setenv("TOUCHSTREAM_STORE", "rocksdict://")
    monkeypatch.setenv("TOUCHSTREAM_STANDBYS", "1")
    assert (Settings().store, Settings().standbys) == ("rocksdict://", 1)
    monkeypatch.setenv("TOUCHSTREAM_STORE", "redis://")
    with pytest.raises(ValueError, match="memory://"):
        Settings()


def test_on_rocksdb_the_batch_path_keeps_its_cache_and_the_deadlines_survive_a_reopen(
    tmp_path: Path, monkeypatch
) -> None:
    from datetime import UTC, datetime

    from agents import processor
    from agents.processor import Processor
    from agents.records import RawMessage

    def purchase(cid: str, eid: str, day: int) -> RawMessage:
        value = (
            f'{{"event_id": "{eid}", "customer_id": "{cid}", "type": "purchase", '
            f'"occurred_at": "2024-03-{day:02d}T10:00:00Z", "amount": "5", "currency": "EUR"}}'
        ).encode()
        return RawMessage("in", 0, day, cid.encode(), value)

    table = table_in(tmp_path, "rocksdict://", partitions=1)
    state = TableState(table)
    proc = Processor(partitions=1)
    now = datetime(2024, 4, 1, tzinfo=UTC)

    def run(p: Processor, s: TableState, messages: list[RawMessage]) -> None:
        r = p.process(messages, lambda c: s.get(c.encode()), now, s.scan)
        for cid, value in r.states.items():
            s.stage(cid.encode(), value, 0)
        s.persist({c.encode(): v for c, v in r.states.items()}, {0: messages[-1].offset})

    run(proc, state, [purchase("a", "e1", 1), purchase("b", "e2", 2)])
    decoded: list[str] = []
    decode = processor.codec.decode
    monkeypatch.setattr(processor.codec, "decode", lambda raw: decoded.append(raw) or decode(raw))
    run(proc, state, [purchase("a", "e3", 3)])
    assert decoded == []  # the bytes RocksDB gives back equal the cached ones
    close(table)

    table = table_in(tmp_path, "rocksdict://", partitions=1)  # a restarted worker
    state = TableState(table)
    state.open({0})
    restarted = Processor(partitions=1)
    run(restarted, state, [purchase("b", "e4", 4)])
    assert restarted._deadlines[0].latest.keys() == {"a", "b"}  # rebuilt from the store
    assert len(decoded) == 1  # a new process: b's state decoded from the store, once
    close(table)
