from __future__ import annotations

import orjson
from kafka.partitioner.default import murmur2

from agents.records import Stored


def purchase(eid: str, cid: str, day: str, amount: str) -> bytes:
    return orjson.dumps(
        {
            "event_id": eid,
            "customer_id": cid,
            "type": "purchase",
            "occurred_at": f"{day}T10:00:00Z",
            "amount": amount,
            "currency": "USD",
        }
    )


def part(key: bytes, partitions: int = 8) -> int:
    """The partition Kafka's default partitioner gives the key (the worker checks it)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def run(coro):
    import asyncio

    return asyncio.run(coro)


def test_a_batch_updates_the_table_once_per_customer_and_lands_in_clickhouse(harness) -> None:
    async def go() -> None:
        async with harness.worker.agent.test_context() as agent:
            await agent.put(
                key=b"c1", value=purchase("e1", "c1", "1997-01-01", "10"), partition=part(b"c1")
            )
            await agent.put(
                key=b"c1", value=purchase("e2", "c1", "1997-01-05", "20"), partition=part(b"c1")
            )
            await agent.put(
                key=b"c2", value=purchase("e3", "c2", "1997-01-03", "5"), partition=part(b"c2")
            )
            await harness.wait_for(3)

    run(go())
    assert {k for _, k, _ in harness.changelog} == {b"c1", b"c2"}
    c1 = Stored.decode(harness.worker.table.get(b"c1"))
    assert (c1.state.purchases, c1.state.frequency, str(c1.state.purchase_total)) == (2, 1, "30")
    rows = harness.rows(
        "SELECT customer_id, version, purchases FROM {db}.customer_state FINAL ORDER BY customer_id"
    )
    assert rows == [("c1", 2, 2), ("c2", 1, 1)]
    assert harness.rows("SELECT count() FROM {db}.events FINAL") == [(3,)]


def test_a_malformed_message_goes_to_the_dead_letters_and_the_worker_keeps_going(harness) -> None:
    async def go() -> None:
        async with harness.worker.agent.test_context() as agent:
            await agent.put(key=b"c1", value=b"{oops", partition=part(b"c1"))
            await agent.put(
                key=b"c1", value=purchase("e1", "c1", "1997-01-01", "-3"), partition=part(b"c1")
            )
            await agent.put(
                key=b"c1", value=purchase("e2", "c1", "1997-01-02", "3"), partition=part(b"c1")
            )
            await harness.wait_for(3)

    run(go())
    reasons = [orjson.loads(v)["reason"] for _, v in harness.dead_letters]
    assert len(reasons) == 2
    assert reasons[0].startswith("not valid JSON")
    assert "greater than or equal to 0" in reasons[1]
    assert harness.rows("SELECT count() FROM {db}.dead_letters FINAL") == [(2,)]
    assert harness.worker.totals.accepted == 1


def test_a_duplicated_event_id_counts_once(harness) -> None:
    async def go() -> None:
        async with harness.worker.agent.test_context() as agent:
            for _ in range(3):
                await agent.put(
                    key=b"c1",
                    value=purchase("same", "c1", "1997-01-01", "10"),
                    partition=part(b"c1"),
                )
            await harness.wait_for(3)

    run(go())
    assert harness.worker.totals.duplicates == 2
    assert harness.rows("SELECT purchases, purchase_total FROM {db}.customer_state FINAL") == [
        (1, 10)
    ]


def test_behind_a_slow_clickhouse_insert_alerts_go_out_at_once_and_later_batches_share_one_insert(
    harness,
) -> None:
    # The fast path's batch handler (agents/consumer.py), called as the consumer calls it.
    import asyncio
    import threading

    from agents.records import RawMessage

    handle = next(iter(harness.worker.app.batch_handlers.values()))
    gate, inserts = threading.Event(), []
    insert = harness.sink.insert

    def slow_insert(table, rows):
        gate.wait(10)
        inserts.append((table, len(rows)))
        insert(table, rows)

    harness.sink.insert = slow_insert
    closed = orjson.dumps(
        {
            "event_id": "x2",
            "customer_id": "c2",
            "type": "account",
            "occurred_at": "1997-02-01T10:00:00Z",
            "change": "closed",
        }
    )

    def batch(offset: int, *kvs: tuple[bytes, bytes]) -> list[RawMessage]:
        return [RawMessage("t", part(k), offset + i, k, v) for i, (k, v) in enumerate(kvs)]

    async def go() -> None:
        first = await handle(batch(0, (b"c1", purchase("e1", "c1", "1997-01-01", "10"))))
        await asyncio.sleep(0.1)  # its insert starts (and waits at the gate)
        second = await handle(
            batch(10, (b"c2", purchase("e2", "c2", "1997-01-02", "5")), (b"c2", closed))
        )
        third = asyncio.ensure_future(
            handle(batch(20, (b"c3", purchase("e3", "c3", "1997-01-03", "7"))))
        )
        await asyncio.sleep(0.3)
        # The first insert is held up: nothing acked, no changelog, but c2's alert is out.
        assert not first.done() and not third.done()
        assert harness.changelog == []
        assert [orjson.loads(v)["customer_id"] for _, v in harness.sent.get("alerts", [])] == ["c2"]
        gate.set()
        for f in (first, second, await third):
            await f

    run(go())
    events = [n for table, n in inserts if table == "events"]
    assert events == [1, 3]  # the second insert carries the second and third batches
    assert {k for _, k, _ in harness.changelog} == {b"c1", b"c2", b"c3"}
    assert harness.rows("SELECT count() FROM {db}.events FINAL") == [(4,)]


def test_with_a_minimum_insert_interval_batches_processed_meanwhile_share_the_next_insert(
    harness,
) -> None:
    import asyncio

    from agents.records import RawMessage

    worker = harness.worker
    worker.settings = worker.settings.model_copy(update={"min_insert_interval_s": 5.0})
    handle = next(iter(worker.app.batch_handlers.values()))
    inserts: list[tuple[str, int]] = []
    insert = harness.sink.insert

    def counted(table, rows):
        inserts.append((table, len(rows)))
        insert(table, rows)

    harness.sink.insert = counted

    def batch(offset: int, cid: bytes, day: str) -> list[RawMessage]:
        return [
            RawMessage("t", part(cid), offset, cid, purchase(f"e{offset}", cid.decode(), day, "1"))
        ]

    async def go() -> None:
        done = [await handle(batch(0, b"c1", "1997-01-01"))]
        await done[0]  # inserted at once: no insert before it
        for i, cid in enumerate((b"c2", b"c3", b"c4"), 1):
            done.append(await handle(batch(i, cid, f"1997-01-0{i + 1}")))
            # Each batch's effects could start before the next; well inside the interval.
            await asyncio.sleep(0.2)
        for f in done:
            await f

    run(go())
    events = [n for table, n in inserts if table == "events"]
    assert events == [1, 3]  # the three later batches waited out the interval together
    assert harness.rows("SELECT count() FROM {db}.events FINAL") == [(4,)]


def test_a_batch_of_purchases_in_120_months_lands_whole_in_chdb(harness) -> None:
    # A backfill: one batch touching more months (events partitions) than chdb's engine
    # takes in one insert (100).
    from agents.records import RawMessage

    handle = next(iter(harness.worker.app.batch_handlers.values()))
    batch = [
        RawMessage(
            "t",
            part(b"c1"),
            i,
            b"c1",
            purchase(f"e{i}", "c1", f"{2010 + i // 12}-{i % 12 + 1:02d}-15", "10"),
        )
        for i in range(120)
    ]

    async def go() -> None:
        import asyncio

        await asyncio.wait_for(await handle(batch), 60)  # a refused insert is retried forever

    run(go())
    assert harness.rows("SELECT count(), uniqExact(toYYYYMM(occurred_at)) FROM {db}.events") == [
        (120, 120)
    ]
    assert harness.rows("SELECT purchases FROM {db}.customer_state FINAL") == [(120,)]
    assert harness.worker.totals.rows_refused == 0


def test_the_event_loop_gets_a_turn_at_least_every_64_messages_of_a_batch(harness) -> None:
    # A till request arriving while a large batch is processed waits for one slice, not
    # for the whole batch (agents/app.py, YIELD_EVERY).
    import asyncio

    from agents.app import YIELD_EVERY
    from agents.records import RawMessage

    handle = next(iter(harness.worker.app.batch_handlers.values()))
    n = 10 * YIELD_EVERY
    batch = [
        RawMessage("t", part(b"c1"), i, b"c1", purchase(f"e{i}", "c1", "1997-01-01", "1"))
        for i in range(n)
    ]
    turns = 0

    async def meanwhile() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def go() -> None:
        other = asyncio.ensure_future(meanwhile())
        await asyncio.sleep(0)
        before = turns
        await handle(batch)  # returns once the batch is processed (its effects go on)
        during = turns - before
        other.cancel()
        assert during >= n // YIELD_EVERY - 1

    run(go())


def test_on_rocksdb_the_table_lives_in_the_data_dir_with_the_standbys_asked_for(
    tmp_path, chdb_dir
) -> None:
    import uuid

    from agents.app import build_app
    from sinks import open_sink
    from touchstream.config import Settings

    with open_sink(f"chdb://{chdb_dir}?database=t_{uuid.uuid4().hex[:8]}") as sink:
        sink.migrate()
        s = Settings(
            broker="kafka://127.0.0.1:9",
            store="rocksdict://",
            standbys=1,
            data_dir=str(tmp_path / "worker"),
        )
        worker = build_app(s, sink)
    store = worker.table.data
    assert type(store).__module__ == "faust.stores.rocksdb" and store.use_rocksdict
    assert worker.app.conf.table_standby_replicas == 1
    assert store.partition_path(0).is_relative_to(tmp_path / "worker")
