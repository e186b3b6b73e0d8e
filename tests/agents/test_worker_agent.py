from __future__ import annotations

import orjson
from kafka.partitioner.default import murmur2

from agents.pipeline import Stored


def purchase(eid: str, cid: str, day: str, amount: str) -> bytes:
    return orjson.dumps({
        "event_id": eid, "customer_id": cid, "type": "purchase",
        "occurred_at": f"{day}T10:00:00Z", "amount": amount, "currency": "USD",
    })


def part(key: bytes, partitions: int = 8) -> int:
    """The partition Kafka's default partitioner gives the key (the worker checks it)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def run(coro):  # noqa: ANN001, ANN201
    import asyncio

    return asyncio.run(coro)


def test_a_batch_updates_the_table_once_per_customer_and_lands_in_clickhouse(harness) -> None:
    async def go() -> None:
        async with harness.worker.agent.test_context() as agent:
            await agent.put(key=b"c1", value=purchase("e1", "c1", "1997-01-01", "10"),
                            partition=part(b"c1"))
            await agent.put(key=b"c1", value=purchase("e2", "c1", "1997-01-05", "20"),
                            partition=part(b"c1"))
            await agent.put(key=b"c2", value=purchase("e3", "c2", "1997-01-03", "5"),
                            partition=part(b"c2"))
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
            await agent.put(key=b"c1", value=b"{oops",
                            partition=part(b"c1"))
            await agent.put(key=b"c1", value=purchase("e1", "c1", "1997-01-01", "-3"),
                            partition=part(b"c1"))
            await agent.put(key=b"c1", value=purchase("e2", "c1", "1997-01-02", "3"),
                            partition=part(b"c1"))
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
                await agent.put(key=b"c1", value=purchase("same", "c1", "1997-01-01", "10"),
                                partition=part(b"c1"))
            await harness.wait_for(3)

    run(go())
    assert harness.worker.totals.duplicates == 2
    assert harness.rows("SELECT purchases, purchase_total FROM {db}.customer_state FINAL") == [
        (1, 10)
    ]
