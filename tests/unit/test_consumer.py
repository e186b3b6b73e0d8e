"""agents/consumer.py's batch consumer around rebalances: what it does with records fetched
while the group rebalances, with records of a partition paused since the fetch, and with
batches done after their generation ended. A real (unstarted) Faust consumer; only the
fetch and the seek, which would need a broker, are stand-ins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from agents.consumer import BatchApp

IN = TP("in", 0)
IN1 = TP("in", 1)


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes = b"k"
    value: bytes = b"v"


def records(tp: TP, *offsets: int) -> list[Record]:
    return [Record(tp.topic, tp.partition, o) for o in offsets]


class Harness:
    def __init__(self, fetched: dict[TP, list[Record]], active: set[TP] | None = None) -> None:
        self.app = BatchApp("t", broker="kafka://127.0.0.1:9", store="memory://", web_enabled=False)
        self.consumer = c = self.app.consumer
        self.handled: list[list[Record]] = []
        self.sought: list[tuple[TP, int]] = []
        self.futures: list[asyncio.Future[None]] = []
        self.on_handle: Callable[[Callable[[], bool]], None] = lambda current: None

        async def wait_next_records(timeout: float) -> Any:
            return fetched, active if active is not None else set(fetched)

        async def seek(tp: TP, offset: int) -> None:
            self.sought.append((tp, offset))

        async def perform_seek() -> None:  # what crashed a worker when a rebalance raced it
            raise IllegalStateError(f"No current assignment for partition {IN}")

        c._wait_next_records = wait_next_records
        # Sought to where each fetch starts (what perform_seek does after an assignment).
        c._next_offset.update({tp: recs[0].offset for tp, recs in fetched.items() if recs})
        c._seek = seek
        c.perform_seek = perform_seek

        async def handler(batch: list[Record], current: Callable[[], bool]) -> Any:
            self.on_handle(current)
            if not current():
                return None
            self.handled.append(list(batch))
            f = asyncio.get_running_loop().create_future()
            self.futures.append(f)
            return f

        self.app.batch_handlers["in"] = handler

    async def fetch(self) -> list[Any]:
        return [m async for m in self.consumer.getmany(1.0)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_records_fetched_while_the_group_rebalances_are_dropped_without_a_seek():
    h = Harness({IN: records(IN, 5, 6)})
    h.consumer.stop_flow()
    run(h.fetch())  # no IllegalStateError from a seek racing the rebalance
    assert h.handled == [] and h.sought == []
    assert dict(h.consumer._read_offset) == {} and dict(h.consumer._committed_offset) == {}


def test_a_fetch_is_handled_as_one_batch_and_acked_when_its_effects_are_done():
    h = Harness({IN: records(IN, 5, 6), IN1: records(IN1, 0)})

    async def go() -> None:
        await h.fetch()
        assert [[r.offset for r in b] for b in h.handled] == [[5, 6, 0]]
        assert h.consumer._acked[IN] == []
        h.futures[0].set_result(None)
        await asyncio.sleep(0)

    run(go())
    assert h.consumer._acked[IN] == [5, 6] and h.consumer._acked[IN1] == [0]
    assert h.consumer._read_offset[IN] == 6


def test_records_of_a_partition_paused_since_the_fetch_are_sought_back_to_be_read_again():
    h = Harness({IN: records(IN, 5, 6), IN1: records(IN1, 40, 41)}, active={IN})
    run(h.fetch())
    assert [[r.offset for r in b] for b in h.handled] == [[5, 6]]
    assert h.sought == [(IN1, 40)]


def test_a_seek_back_on_a_partition_no_longer_assigned_is_not_an_error():
    h = Harness({IN1: records(IN1, 40)}, active=set())

    async def refuse(tp: TP, offset: int) -> None:
        raise IllegalStateError(f"No current assignment for partition {tp}")

    h.consumer._seek = refuse
    run(h.fetch())
    assert h.handled == []


def test_a_batch_done_after_its_generation_ended_is_not_acked():
    h = Harness({IN: records(IN, 5, 6)})

    async def go() -> None:
        await h.fetch()
        h.app.consumer_generation_id += 1  # a rebalance while its effects went out
        h.futures[0].set_result(None)
        await asyncio.sleep(0)

    run(go())
    assert h.consumer._acked[IN] == [] and h.consumer._n_acked == 0


def test_a_batch_done_while_the_flow_is_stopped_for_a_rebalance_is_not_acked():
    h = Harness({IN: records(IN, 5, 6)})

    async def go() -> None:
        await h.fetch()
        h.consumer.stop_flow()  # revoked: Faust has dropped this partition's acks already
        h.futures[0].set_result(None)
        await asyncio.sleep(0)

    run(go())
    assert h.consumer._acked[IN] == []


def test_a_batch_that_waited_past_a_rebalance_is_neither_processed_nor_acked():
    h = Harness({IN: records(IN, 5, 6)})

    def rebalance_meanwhile(current: Callable[[], bool]) -> None:
        h.app.consumer_generation_id += 1  # while the handler waited for its lock

    h.on_handle = rebalance_meanwhile
    run(h.fetch())
    assert h.handled == [] and h.consumer._acked[IN] == []


def test_a_partition_assigned_again_keeps_no_acks_or_gaps_of_an_earlier_generation(monkeypatch):
    async def faust_assigned(self: Any, assigned: Any, generation_id: int = 0) -> None:
        pass  # Faust's own callback chain (tables, recovery) needs a running app

    monkeypatch.setattr(faust_aiokafka.Consumer, "on_partitions_assigned", faust_assigned)
    h = Harness({})
    c = h.consumer
    changelog = TP("t-customers-changelog", 0)
    for tp in (IN, changelog):
        c._acked[tp].extend([7, 8])
        c._acked_index[tp].update([7, 8])
        c._gap[tp].addi(3, 5)
    run(c.on_partitions_assigned({IN, changelog}, 2))
    assert IN not in c._acked and IN not in c._acked_index and IN not in c._gap
    assert c._acked[changelog] == [7, 8]  # Faust's own topics: left as they are


@pytest.mark.parametrize("gap", [True, False])
def test_offsets_a_topic_skips_are_tracked_as_gaps_so_commits_pass_them(gap):
    offsets = (5, 9) if gap else (5, 6)
    h = Harness({IN: records(IN, *offsets)})
    h.consumer._read_offset[IN] = 4
    run(h.fetch())
    assert bool(h.consumer._gap[IN]) is gap


def test_records_of_a_partition_not_yet_sought_after_its_assignment_are_not_handled():
    h = Harness({IN: records(IN, 5, 6)})
    h.consumer._next_offset.clear()  # assigned; the seek to the committed offset is to come
    run(h.fetch())
    assert h.handled == [] and h.sought == []


def test_a_fetch_that_starts_past_the_next_offset_is_sought_back_and_not_handled():
    # Records 3-4 were dropped around a rebalance: taking 5-6 would run ahead of them.
    h = Harness({IN: records(IN, 5, 6), IN1: records(IN1, 0)})
    h.consumer._next_offset[IN] = 3
    run(h.fetch())
    assert [[r.offset for r in b] for b in h.handled] == [[0]]
    assert h.sought == [(IN, 3)]
    assert h.consumer._next_offset[IN] == 3 and h.consumer._next_offset[IN1] == 1


def test_a_gap_that_comes_back_the_same_after_a_seek_back_is_taken():
    h = Harness({IN: records(IN, 5, 6)})
    h.consumer._next_offset[IN] = 3
    run(h.fetch())
    run(h.fetch())  # read again from 3: still 5 first, a real gap (a transaction marker)
    assert [[r.offset for r in b] for b in h.handled] == [[5, 6]]
    assert h.sought == [(IN, 3)] and h.consumer._next_offset[IN] == 7


def test_records_below_the_next_offset_are_not_handled_twice():
    h = Harness({IN: records(IN, 5, 6, 7)})
    h.consumer._next_offset[IN] = 7
    run(h.fetch())
    assert [[r.offset for r in b] for b in h.handled] == [[7]]


def test_the_seek_after_an_assignment_sets_where_each_partition_is_taken_from(monkeypatch):
    h = Harness({})
    c = h.consumer
    fresh = TP("in", 2)
    changelog = TP("t-customers-changelog", 0)
    started: list[TP] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        return {IN: 120, IN1: None, fresh: 0, changelog: 9}

    async def seek_to_start(tps: list[TP]) -> None:
        started.extend(tps)

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        return {IN1: 0, fresh: 7}  # fresh: records before 7 are gone (retention)

    monkeypatch.setattr(type(c), "assignment", lambda self: {IN, IN1, fresh, changelog})
    c.seek_to_committed = seek_to_committed
    c._seek_to_start = seek_to_start
    c.earliest_offsets = earliest_offsets
    del c.perform_seek  # the class's, not the harness's stand-in
    run(c.perform_seek())
    # Partitions without a commit are taken from their log start, not from whatever
    # fetch comes first (one made before the seek to the start can still arrive).
    assert c._next_offset == {IN: 120, IN1: 0, fresh: 7}
    assert sorted(started) == sorted([IN1, fresh])


def test_a_partition_whose_log_start_is_unknown_is_taken_from_its_first_record(monkeypatch):
    h = Harness({})
    c = h.consumer

    async def seek_to_committed() -> dict[TP, int | None]:
        return {IN: None}

    async def seek_to_start(tps: list[TP]) -> None:
        pass

    async def earliest_offsets(*tps: TP) -> dict[TP, int]:
        raise IllegalStateError(f"No current assignment for partition {IN}")

    monkeypatch.setattr(type(c), "assignment", lambda self: {IN})
    c.seek_to_committed = seek_to_committed
    c._seek_to_start = seek_to_start
    c.earliest_offsets = earliest_offsets
    del c.perform_seek
    run(c.perform_seek())
    assert c._next_offset == {IN: None}


def test_a_seek_back_made_before_the_assignment_seek_lets_no_later_fetch_run_ahead(monkeypatch):
    # Seen in a rebalance: while its table recovered, the partition's records from its
    # committed offset 313 were dropped and sought back to 313; then the seek to the
    # committed offset (313 again); then a fetch the consumer thread had made before it,
    # starting at 679. Taken as "a gap that came back after a seek back", it lost 313-678.
    fetched = {IN: records(IN, 313, 314)}
    active: set[TP] = set()  # paused: its table recovers
    h = Harness(fetched, active)
    c = h.consumer
    c._next_offset.clear()
    run(h.fetch())
    assert h.sought == [(IN, 313)] and h.handled == []

    async def seek_to_committed() -> dict[TP, int | None]:
        return {IN: 313}

    monkeypatch.setattr(type(c), "assignment", lambda self: {IN})
    c.seek_to_committed = seek_to_committed
    del c.perform_seek
    run(c.perform_seek())
    active.add(IN)
    fetched[IN] = records(IN, 679, 680)  # fetched before the seek, handed over after it
    run(h.fetch())
    assert h.handled == [] and h.sought == [(IN, 313), (IN, 313)]
    fetched[IN] = records(IN, 313, 314)  # the fetch after the seek back
    run(h.fetch())
    assert [[r.offset for r in b] for b in h.handled] == [[313, 314]]


def test_a_fetch_after_a_seek_back_that_starts_elsewhere_is_sought_back_again():
    # Two fetches made before the seek back arrive after it: neither is a gap that came
    # back the same, so neither is taken.
    fetched = {IN: records(IN, 5, 6)}
    h = Harness(fetched)
    h.consumer._next_offset[IN] = 3
    run(h.fetch())
    fetched[IN] = records(IN, 7, 8)
    run(h.fetch())
    assert h.handled == [] and h.sought == [(IN, 3), (IN, 3)]
    fetched[IN] = records(IN, 3, 4)
    run(h.fetch())
    assert [[r.offset for r in b] for b in h.handled] == [[3, 4]]


def test_a_seek_back_that_failed_does_not_count_as_one():
    fetched = {IN: records(IN, 5, 6)}
    h = Harness(fetched)
    h.consumer._next_offset[IN] = 3

    async def refuse(tp: TP, offset: int) -> None:
        raise IllegalStateError(f"No current assignment for partition {tp}")

    h.consumer._seek = refuse
    run(h.fetch())
    run(h.fetch())  # the same fetch again, but no seek back happened in between
    assert h.handled == []
